"""Flags that several commands share, defined once so that each means the same in every command.

Importing this module, and every `add_*` function, stays free of torch and NumPy: `pyramidal COMMAND
--help` builds all parsers. The task flags come from the damage tasks' own declarations
(`Task.declared_options`), which load without torch.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from pyramidal.configcheck import MAX_BATCH, MAX_SIDE, MAX_STEPS
from pyramidal.damage import TASKS
from pyramidal.device import PRECISIONS
from pyramidal.errors import PyramidalError


def add_device(parser: argparse._ActionsContainer, default: Any = "auto") -> None:
    """`--device`: auto (CUDA, else Apple's MPS, else the CPU), or any device type torch reports available."""
    parser.add_argument("--device", default=default,
                        help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps, or any other device type the "
                             "installed torch reports as available, e.g. xpu (default auto)")


def add_precision(parser: argparse._ActionsContainer, default: Any = "auto") -> None:
    """`--precision`, checked when the device is known (fp16 is for GPUs)."""
    parser.add_argument("--precision", default=default, metavar="{" + ",".join(PRECISIONS) + "}",
                        help="auto: bf16 where the CPU/GPU supports it, fp16 (with a gradient scaler in training) on "
                             "older GPUs, fp32 elsewhere (default auto)")


def add_threads(parser: argparse._ActionsContainer, default: Any = None) -> None:
    """`--threads`: torch's CPU threads."""
    parser.add_argument("--threads", type=at_least(1), default=default,
                        help="CPU threads for torch (default: torch's choice)")


# --------------------------------------------------------------------------- checked values
# argparse types: a bad value is a one-line "argument --flag: ..." error before the command starts.


@functools.cache  # one function per limit, so that a shared flag has the very same type everywhere
def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number >= `low` (and <= `high`, if given)."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value}")
        return value

    return whole_number


def side(low: int = 1) -> Callable[[str], int]:
    """An argparse type: an image or patch side in px, from `low` to `configcheck.MAX_SIDE`."""
    return at_least(low, MAX_SIDE)


def batch_size() -> Callable[[str], int]:
    """An argparse type: a batch size, from 1 to `configcheck.MAX_BATCH`."""
    return at_least(1, MAX_BATCH)


def step_count(low: int = 1) -> Callable[[str], int]:
    """An argparse type: a number of steps, from `low` to `configcheck.MAX_STEPS`."""
    return at_least(low, MAX_STEPS)


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def task_name(text: str) -> str:
    """An argparse type: a registered damage task's name (never a path)."""
    if text not in TASKS.names():
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose one of {', '.join(TASKS.names())}")
    return text


def add_out(parser: argparse._ActionsContainer, help: str, default: Any = None, required: bool = False,
            metavar: str = "DIR") -> argparse.Action:
    """`-o/--out`: where a command writes its files."""
    shown = f" (default {default})" if isinstance(default, str) and default != argparse.SUPPRESS else ""
    return parser.add_argument("-o", "--out", default=default, required=required, metavar=metavar, help=help + shown)


def add_recursive(parser: argparse._ActionsContainer) -> None:
    """`--recursive`: also read the sub-folders of an input folder, mirroring them in the output folder."""
    parser.add_argument("--recursive", action="store_true",
                        help="also read the sub-folders of input folders (hidden ones and non-images skipped), "
                             "mirroring them in the output folder")


def add_strip_metadata(parser: argparse._ActionsContainer) -> None:
    """`--strip-metadata`: outputs without the inputs' EXIF, ICC profile, DPI and PNG colour chunks."""
    parser.add_argument("--strip-metadata", action="store_true",
                        help="write the outputs without the inputs' metadata; by default each output keeps its "
                             "input's EXIF (camera, date; orientation set to 1), ICC colour profile, DPI and PNG "
                             "colour chunks, as far as its format holds them")


def add_json(parser: argparse._ActionsContainer) -> None:
    """`--json PATH`: write the results as JSON; `-` prints them on stdout in place of the human report."""
    parser.add_argument("--json", metavar="PATH",
                        help="write the results as JSON to PATH; '-' prints them on stdout instead of the report")


def check_out_folder(folder: str) -> None:
    """Before the work starts: PyramidalError unless files can be written in `folder` (made if need be)."""
    from pyramidal.io import folder_problem  # lazy: io loads NumPy and Pillow, not needed for --help

    problem = folder_problem(folder)
    if problem:
        raise PyramidalError(problem)


def check_report_files(**files: str | None) -> Any:
    """Before the work starts: check that each file named by a flag (`json="out.json"` for --json) can be
    written; '-' (stdout) and None are skipped. Such a file may be replaced: the user named it exactly.
    Returns the checked `io.OutputPlan`, for `write_outputs`."""
    from pyramidal.io import OutputPlan  # lazy: io loads NumPy and Pillow, not needed for --help

    plan = OutputPlan()
    for flag, path in files.items():
        if path and path != "-":
            plan.add(path, "--" + flag.replace("_", "-"), replace_ok=True)
    return plan.check()


def write_json_output(data: Any, target: str, *, exclusive: bool = False) -> None:
    """Write `data` for `--json TARGET`: one line on stdout for '-', else an indented file (atomically;
    `exclusive`: only if no file is there, see `io.atomic_write`)."""
    from pyramidal.io import jsonable, write_json  # lazy: io loads NumPy and Pillow, not needed for --help

    if target == "-":
        print(json.dumps(jsonable(data), ensure_ascii=False), flush=True)
    else:
        write_json(data, target, exclusive=exclusive)


def write_outputs(command: str, plan: Any, writes: list[tuple[str, Callable[..., Any]]]) -> int:
    """Write a command's planned outputs at the end of its work, each claimed as it is written.

    Args:
        command: the command's name, for the error lines.
        plan: the checked `io.OutputPlan` of these outputs; a file may replace another only as it allowed
            (`--overwrite`, or a report named exactly that existed when it was checked).
        writes: (path, write) pairs; `write(exclusive=...)` writes the file.

    Returns:
        0, or 1 when a file appeared at some output after the check (another run writing there): that file is
        left as it is, reported on one line, and the other outputs are still written. `wrote PATH` is printed
        for each file written.
    """
    from pyramidal.io import OutputExists  # lazy: io loads NumPy and Pillow, not needed for --help
    from pyramidal.progress import say  # lazy: not on the torch-free --help path

    lost = 0
    for path, write in writes:
        try:
            write(exclusive=plan.exclusive(path))
        except OutputExists as exc:
            say(f"pyramidal {command}: error: {exc}", file=sys.stderr)
            lost += 1
        else:
            say(f"wrote {path}")
    return 1 if lost else 0


# --------------------------------------------------------------------------- damage tasks


def task_help() -> str:
    """`--task` help: the registered task names."""
    return "damage task: " + ", ".join(TASKS.names())


def task_list() -> str:
    """One line per task, `name  description`, for a command's epilog."""
    width = max(map(len, TASKS.names()))
    return "damage tasks:\n" + "\n".join(f"  {n:<{width}}  {TASKS.get(n).description}" for n in TASKS.names())


def declared_task_options() -> dict[str, list[tuple[str, Any]]]:
    """{option name: [(task name, TaskOption), ...]} over every registered task."""
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for task in TASKS.names():
        for option in TASKS.get(task).declared_options:
            by_name.setdefault(option.name, []).append((task, option))
    for name, users in by_name.items():
        if len({option.type for _, option in users}) > 1:
            raise TypeError(f"task option {name!r} has different types in tasks {', '.join(t for t, _ in users)}")
    return by_name


def add_task_options(parser: argparse._ActionsContainer, use: str, default: Any = None) -> None:
    """A `--NAME` flag for every option a damage task declares; several tasks may share one.

    `use` picks the wording and shape: "degrade" (one value), "evaluate" (one or more values, each
    reported as a setting) or "train" (one value; the help says what training draws without it).
    """
    for name, users in declared_task_options().items():
        if use != "train" and all(option.train_only for _, option in users):
            continue  # it shapes random training damage; degrade and evaluate use fixed settings
        parts = []
        for task, option in users:
            if use == "evaluate":
                values = [s[name] for s in TASKS.get(task).eval_settings() if name in s] or [option.default]
                parts.append(f"{task}: {option.help}, one setting per value (default {' '.join(map(str, values))})")
            elif use == "train":
                parts.append(f"{task}: {option.help} [{option.train_default or option.default}]")
            else:
                parts.append(f"{task}: {option.help} (default {option.default})")
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=users[0][1].type, default=default,
                            nargs="+" if use == "evaluate" else None, metavar=name.upper(), help="; ".join(parts))


def task_option_values(args: argparse.Namespace, task: str | None = None) -> dict[str, Any]:
    """The task-option flags given on the command line, {name: value}.

    With `task`, a flag that task does not take is refused, naming the flag and the tasks that take it.
    """
    given = {name: getattr(args, name) for name in declared_task_options() if getattr(args, name, None) is not None}
    if task is not None:
        accepted = {o.name for o in TASKS.get(task).declared_options}
        for name in given:
            if name not in accepted:
                users = " or ".join(t for t, _ in declared_task_options()[name])
                raise PyramidalError(f"--{name.replace('_', '-')} applies to --task {users}, not {task}")
    return given
