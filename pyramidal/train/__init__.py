"""Training: MSE on [-1, 1], Adam, TensorBoard as PSNR, crash-proof checkpoints, exact resume, DDP.

The trainer knows nothing about any particular architecture: it builds whatever `create_model` returns
and talks to it only through `forward`, `parameters()` and `state_dict()`. Options live in pyramidal.config,
the RNG/EMA/stop-signal state in pyramidal.runstate. The package, by job:

- trainer.py: `Trainer`, the coordinator (set-up in named steps, the loop) and `train(config)`;
- machine.py: threads, device, processes (DDP), precision, seeds;
- loaders.py: the data source and the training and validation loaders of each patch-size phase;
- runfolder.py: the run folder, its lock, last.ckpt and best.safetensors, `TrainingDiverged`;
- meter.py: the logged training numbers and TensorBoard pictures;
- validation.py: the scores on the validation crops.

    from pyramidal.config import TrainConfig
    from pyramidal.train import train
    run_dir = train(TrainConfig(task="squares", model="pyramidal51", data="builtin", steps=200))
"""

from pyramidal.train.runfolder import TrainingDiverged
from pyramidal.train.trainer import Trainer, train

__all__ = ["Trainer", "TrainingDiverged", "train"]
