"""Training: MSE on [-1, 1], Adam, TensorBoard as PSNR, crash-proof checkpoints, exact resume, DDP.

The trainer knows nothing about any particular architecture: it builds whatever `create_model` returns
and talks to it only through `forward`, `parameters()` and `state_dict()`. Options live in pyramidal.config,
the RNG/EMA/stop-signal state in pyramidal.runstate. The package, by job:

- trainer.py: `Trainer`, the coordinator: its set-up in named steps, and the loop;
- machine.py: threads, device, processes (DDP), precision, seeds;
- loaders.py: the data source and the training and validation loaders of each patch-size phase;
- runfolder.py: the run folder, its lock, last.ckpt (and when it is due) and best.safetensors, `TrainingDiverged`;
- meter.py: the logged training numbers, the run's clock, metrics.csv and TensorBoard (`TrainingLog`);
- stopping.py: when the loop ends (step and epoch limits, time budgets, signals; one verdict under DDP);
- validation.py: the scores on the validation crops, and the one the best weights are chosen by.

    from pyramidal.config import TrainConfig
    from pyramidal.train import train
    run_dir = train(TrainConfig(task="squares", model="pyramidal51", data="builtin", steps=200))
"""

from __future__ import annotations

from pathlib import Path

from pyramidal.config import TrainConfig, non_default, resume_config
from pyramidal.train.runfolder import TrainingDiverged
from pyramidal.train.trainer import Trainer


def train(config: TrainConfig) -> Path:
    """Train as `config` says and return the run folder.

    With `config.resume`, the run's saved config is used and every field of `config` that differs from
    the TrainConfig default overrides it (so `TrainConfig(resume=dir, steps=500)` trains on to step 500).
    """
    if config.resume:
        overrides = non_default(config)
        overrides.pop("resume", None)
        config = resume_config(config.resume, overrides)
    return Trainer(config).fit()


__all__ = ["Trainer", "TrainingDiverged", "train"]
