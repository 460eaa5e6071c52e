"""`pyramidal train`: train any registered model on any damage task; TensorBoard, checkpoints, resume, DDP."""

from __future__ import annotations

import argparse
import dataclasses

from pyramidal.cli import common
from pyramidal.config import TrainConfig, non_default, resolve_config, resume_config
from pyramidal.configcheck import LOSSES
from pyramidal.configfiles import parse_options
from pyramidal.errors import PyramidalError

HELP = "train a model on a damage task (TensorBoard as PSNR, crash-proof checkpoints, --resume, torchrun)"

S = argparse.SUPPRESS  # unset flags stay absent, so a --config file's values are not overridden by defaults


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").strip("[]()").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Defaults are shown in brackets or as (default ...); a --config TOML file may set any option (keys "
        "are the flags in snake_case) and flags override it. Multi-GPU / multi-node: torchrun --nproc-per-node N -m pyramidal "
        "train ... (see the README, Training)."
    )
    g = parser.add_argument_group("what to learn")
    g.add_argument("--config", metavar="FILE", default=S,
                   help="TOML file with any of these options, or a preset shipped with pyramidal: quick, noise, "
                        "squares, ... (the built-in weights' recipes: --recipe)")
    g.add_argument("--recipe", metavar="NAME", default=S,
                   help="train a whole recipe (pyramidal/recipes/NAME.toml or a TOML file): every stage in order, "
                        "each from the previous stage's best weights, under OUT/NAME/; run again to continue; "
                        "other flags apply to every stage")
    g.add_argument("--stages", metavar="K[-L]", default=S,
                   help="with --recipe: train only stages K to L (1-based)")
    g.add_argument("--resume", metavar="RUN_DIR", default=S,
                   help="continue a run exactly where it stopped (flags given here override its config)")
    g.add_argument("--task", default=S, help=common.task_help() + " [squares]")
    common.add_task_options(g, "train", default=S)
    g.add_argument("--task-option", dest="task_options", action="append", metavar="KEY=VALUE", default=S,
                   help="any task option (repeatable; value in TOML syntax), e.g. tasks=noise,blur for mixed")
    g.add_argument("--model", default=S, help="registered model (see `pyramidal models`) [pyramidal51]")
    g.add_argument("--m", type=int, default=S, help="dense pyramids: stem width")
    g.add_argument("--growth", type=int, default=S, help="dense pyramids: growth rate k")
    g.add_argument("--down", default=S, help="dense pyramids: transition down (maxpool, avgpool, strided)")
    g.add_argument("--up", default=S, help="dense pyramids: transition up (convtranspose, upsample, ...)")
    g.add_argument("--dropout", type=float, default=S, help="dense pyramids: dropout rate")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=S,
                   help="predict a correction added to the input (clamped) instead of the image")
    g.add_argument("--memory-efficient", action=argparse.BooleanOptionalAction, default=S,
                   help="dense pyramids: recompute concatenations, BN-ReLU and transitions in backward (less memory, slower)")
    g.add_argument("--channels", type=_ints, default=S, help="plain autoencoders: widths per level, e.g. 16,32,64")
    g.add_argument("--model-option", dest="model_options", action="append", metavar="KEY=VALUE", default=S,
                   help="any other model option (repeatable), e.g. blocks=[4,5] or activation=leakyrelu")
    g.add_argument("--init-weights", metavar="PATH", default=S,
                   help="start from these weights (.safetensors, .ckpt, a run folder's best weights, or builtin:TASK)")

    g = parser.add_argument_group("data")
    g.add_argument("--data", default=S, help="builtin, folder:PATH or celeba:PATH [builtin]")
    g.add_argument("--size", type=int, default=S, help="patch side in pixels [64]")
    g.add_argument("--max-images", type=int, default=S, help="use at most N source images")
    g.add_argument("--patches-per-epoch", type=int, default=S,
                   help="built-in data: random patches per epoch [1024] (folders: one per image)")
    g.add_argument("--val-images", type=int, default=S, help="fixed validation crops, 0 = all [256]")
    g.add_argument("--batch-size", type=int, default=S, help="batch per process [32]")
    g.add_argument("--num-workers", type=int, default=S, help="data loader processes [0]")
    g.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=S,
                   help="hold the training photographs in the device's memory and cut and damage each batch there "
                        "(noise, blur, pixelate, gray, squares, block, grid; for a GPU, where the CPU pipeline "
                        "cannot keep up); an epoch is then --patches-per-epoch patches [off]")
    g.add_argument("--size-schedule", metavar="STEP:SIZE[:BATCH],...", default=S,
                   help="larger patches late in training, switched at the first epoch start at or after STEP")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=S, help="learning rate [3e-4]")
    g.add_argument("--weight-decay", type=float, default=S, help="weight decay [1e-4]")
    g.add_argument("--optimizer", choices=("adam", "adamw"), default=S,
                   help="adam: L2 decay as in the research; adamw: decoupled decay [adam]")
    g.add_argument("--loss", choices=LOSSES, default=S,
                   help="training objective; psnr: each image's PSNR counts equally, and the best weights are "
                        "chosen by the validation images' mean PSNR; logged PSNR uses the MSE either way [mse]")
    g.add_argument("--schedule", choices=("none", "cosine", "step"), default=S, help="LR schedule [none]")
    g.add_argument("--warmup-steps", type=int, default=S, help="linear LR warm-up steps [0]")
    g.add_argument("--min-lr", type=float, default=S, help="cosine: final LR [0]")
    g.add_argument("--lr-step", type=int, default=S, help="step schedule: every N steps ...")
    g.add_argument("--lr-gamma", type=float, default=S, help="... multiply the LR by this [0.1]")
    g.add_argument("--clip-grad", type=float, default=S, help="clip the global gradient norm to this")
    g.add_argument("--ema", type=float, default=S,
                   help="EMA decay of the weights, e.g. 0.999; used for validation and best weights [off]")

    g = parser.add_argument_group("length (the first limit reached stops the run)")
    g.add_argument("--epochs", type=int, default=S, help="epochs [10 if no limit is given]")
    g.add_argument("--steps", type=int, default=S, help="optimizer steps")
    g.add_argument("--max-minutes", type=float, default=S, help="training minutes, summed over resumes")
    g.add_argument("--max-cpu-minutes", type=float, default=S,
                   help="CPU minutes of this process (all its threads), summed over resumes: equal budgets on a "
                        "shared machine")

    g = parser.add_argument_group("machine")
    g.add_argument("--seed", type=int, default=S, help="random seed; fixed seed = reproducible on the CPU [0]")
    common.add_device(g, default=S)
    common.add_threads(g, default=S)
    common.add_precision(g, default=S)
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S,
                   help="NHWC memory format [on]")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=S, help="torch.compile [off]")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=S,
                   help="SyncBatchNorm across processes under torchrun [off]")

    g = parser.add_argument_group("monitoring and checkpoints")
    common.add_out(g, "runs go to OUT/<task>/<model>/<YYYYmmdd-HHMMSS>/ [runs]", default=S)
    g.add_argument("--val-every", type=int, default=S, help="also validate every N steps [0: per epoch]")
    g.add_argument("--log-every", type=int, default=S, help="train scalars every N steps [50]")
    g.add_argument("--log-images", type=int, default=S, help="images per TensorBoard grid [8]")
    g.add_argument("--checkpoint-minutes", type=float, default=S, help="last.ckpt also every N minutes [10]")
    g.add_argument("--checkpoint-every-steps", type=int, default=S, help="last.ckpt also every N steps [off]")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S,
                   help="progress bar [when stderr is a terminal]; --progress in a log writes plain lines "
                        "every 10 s instead")
    g.add_argument("--quiet", action=argparse.BooleanOptionalAction, default=S, help="no epoch summaries")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The options given on the command line, as TrainConfig fields."""
    given = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    if "task_options" in given:
        given["task_options"] = parse_options(given["task_options"], "--task-option")
    if "model_options" in given:
        given["model_options"] = parse_options(given["model_options"], "--model-option")
    # A task's flag without a TrainConfig field of its own (e.g. --tasks of mixed) is a task option.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in common.declared_task_options():
        if name in given and name not in fields:
            given.setdefault("task_options", {})[name] = given.pop(name)
    return given


def run(args: argparse.Namespace) -> int:
    # lazy: training imports torch; `pyramidal train --help` stays torch-free
    from pyramidal.train import Trainer

    overrides = overrides_from_args(args)
    if "recipe" in overrides:
        return run_recipe_command(overrides)
    if "stages" in overrides:
        raise PyramidalError("--stages selects stages of a recipe: give --recipe NAME")
    if overrides.get("resume"):
        resume = overrides.pop("resume")
        config = resume_config(resume, overrides)
    else:
        config = resolve_config(overrides)
        if config.resume:  # `resume = "RUN"` in a --config file means what --resume RUN means
            given = {k: v for k, v in non_default(config).items() if k not in ("resume", "config")}
            config = resume_config(config.resume, given)
    trainer = Trainer(config)
    trainer.fit()
    return 130 if trainer.interrupted else 0


def run_recipe_command(overrides: dict) -> int:
    """`train --recipe NAME [--stages K-L] [--out DIR] [flags for every stage]`."""
    # lazy: recipes train, which imports torch; `pyramidal train --help` stays torch-free
    from pyramidal.recipe import run_recipe

    name, stages = overrides.pop("recipe"), overrides.pop("stages", None)
    if "config" in overrides or "resume" in overrides:
        raise PyramidalError("--recipe trains a recipe's stages; give it without --config or --resume "
                             "(the same command again continues a stopped recipe)")
    run_recipe(name, overrides.pop("out", "runs/recipes"), stages, overrides)
    return 0
