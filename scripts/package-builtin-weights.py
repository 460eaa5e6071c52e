#!/usr/bin/env python
"""Package one training run as built-in weights: pyramidal/weights/TASK.safetensors (fp16) + TASK.json.

The file's own metadata (and the JSON sidecar, a readable copy) records the model, the training config and
command, the data, the steps, the scores that `pyramidal evaluate` measures on the built-in validation
photographs against the best classical baseline, and a short model card: licence, training data and their
licences, intended use and limits (`pyramidal weights TASK` shows it).

RUN_DIR is the run of a recipe's last stage (`pyramidal train --recipe TASK`, OUT/TASK/stage-K-NAME/...); the
record names the recipe, not paths: a run trained any other way is refused in one line.

A GPU campaign's archive (`LABEL.tar` from scripts/gpu-campaign.sh) is packaged the same way, with the device
named and the steps counted once: the campaign run's, plus the shipped file's when it started from them. A
model too slow for a 12 MP photo on a CPU (more than 1.5× the shipped model's FLOPs per pixel) is not written
over the task's default file: give it a name of its own (--out).

Usage: scripts/package-builtin-weights.py [--baselines fast] TASK RUN_DIR
       scripts/package-builtin-weights.py --campaign LABEL.tar [--out FILE] [--baselines all|fast|none]
       scripts/package-builtin-weights.py --card TASK...   # rewrite the record and card, tensors unchanged
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "pyramidal" / "weights"

# The photographs of `--data builtin+.data/photos`, and their licences: scikit-image's, then those of the
# folders of .data/photos that scripts/get-training-photos.sh fills (its --list has each file's licence).
SKIMAGE_PHOTOS = (
    "12 of scikit-image's sample photographs (rocket, motorcycle_left, motorcycle_right, hubble_deep_field, "
    "ihc, retina, camera, coins, moon, brick, grass, gravel), shipped inside scikit-image; public domain or "
    "CC0, as each one's skimage.data docstring states")
NEVER_TRAINED_ON = (
    "validation only, never trained on: scikit-image's astronaut, chelsea and coffee, and the photographs "
    "scripts/get-training-photos.sh holds out in .data/photos-heldout; evaluation only, never trained or tuned "
    "on: CBSD68, Kodak24 and the PolyU real-noise pairs")
BSDS432 = (
    "432 photographs of the Berkeley Segmentation Data Set 500 (Arbelaez et al., TPAMI 2011; distributed by its "
    "authors for research and education, github.com/BIDS/BSDS500): its train, val and test images minus the 68 of "
    "CBSD68, laid out by scripts/get-bsds432.sh into .data/bsds432; not distributed with pyramidal")
# A record without `training_photos` predates it: those weights were trained on mate-nature alone.
DEFAULT_PHOTO_FOLDERS = ["mate-nature"]
# What other damage a model of each task does not know (the card's limits).
OTHER_DAMAGE = {
    "": "camera noise, other codecs, other blur kernels, holes of other shapes or colours",
    "camera": "in-camera denoising and sharpening, other tone curves, noise far above or below its training "
              "range, other codecs",
}
TASK_USE = {
    "noise": "removing Gaussian-like noise from photographs, blind to its strength (σ 0-130 on the 0-255 "
             "scale); --strength trades the detail it keeps against the smoothness it gives",
    "pixelate": "×8 super-resolution of pixelated (block-averaged) photographs",
    "blur": "deblurring photographs blurred by a Gaussian of σ ≈ 2.6 px",
    "jpeg": "removing JPEG block and ringing artefacts at low quality (5-50)",
    "squares": "filling small magenta squares painted over photographs (the model finds them itself)",
    "block": "filling one large centred magenta square (face-style inpainting; the model finds it itself)",
    "grid": "filling a 3×3 grid of magenta squares (the model finds them itself)",
    "mixed": "blind restoration of photographs with one or two of the damages above, in any order",
    "inpaint": "filling holes of any shape whose mask is given (restore --mask): scratches, stamps, text, objects "
               "to remove; the pixels outside the mask are kept exactly",
    "camera": "removing the noise of photographs as cameras and phones save them (high ISO, low light: signal-"
              "dependent, coloured by demosaicing, softened by JPEG), blind to its strength; --strength trades the "
              "detail it keeps against the smoothness it gives",
}


class NotPortable(Exception):
    """A record would name something by a path of this machine: the packager refuses it in one line."""


# An absolute path (POSIX, home-relative or Windows) at the start of a string or after a separator.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s<=:'\"(,])(?:/[^\s/]|~/|[A-Za-z]:[\\/])")
# How a record names start weights: a shipped file, a recipe's product, or a stage's run (`<... run>/...`).
PORTABLE_START = re.compile(r"(builtin:|recipe:)[\w-]+|<[^<>/]+ run>/best\.safetensors")


def absolute_paths(value) -> list[str]:
    """Every string inside `value` (a record: dicts, lists, strings) that holds an absolute path."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in absolute_paths(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in absolute_paths(v)]
    return [value] if isinstance(value, str) and ABSOLUTE_PATH.search(value) else []


def check_portable(record: dict) -> None:
    """Refuse a record that holds an absolute path anywhere."""
    found = absolute_paths(record)
    if found:
        raise NotPortable(f"the record would hold a path of this machine: {found[0]!r}")


def shipped_recipe(name: str | None, run: str = "the run") -> str:
    """The shipped recipe a run was trained by; refused when it was trained any other way."""
    from pyramidal.hub import list_recipes

    if not name or name not in list_recipes():
        raise NotPortable(f"{run} was not trained by a recipe shipped in pyramidal/recipes/ (recipe: {name}); "
                          "train it with `pyramidal train --recipe TASK`, so that the record names what a user "
                          "can rerun")
    return name


def recipe_command(name: str) -> str:
    """The commands that remake what recipe `name` makes, including the recipe it starts from."""
    from pyramidal.recipe import RECIPE_PREFIX, load_recipe

    start = str(load_recipe(name).shared.get("init_weights", ""))
    before = recipe_command(start[len(RECIPE_PREFIX):]) + " && " if start.startswith(RECIPE_PREFIX) else ""
    return f"{before}pyramidal train --recipe {name}"


def start_name(init_weights: str | None) -> str | None:
    """Start weights as a user can name them: builtin:TASK, recipe:NAME, or `<recipe NAME STAGE run>/...` for a
    stage's best weights; None for anything else (a file only this machine has)."""
    if not init_weights or PORTABLE_START.fullmatch(str(init_weights)):
        return init_weights
    path = Path(init_weights)
    weights_dir = (ROOT / "pyramidal" / "weights").resolve()
    if path.resolve().parent == weights_dir and path.suffix == ".safetensors":
        return f"builtin:{path.stem}"
    config = path.parent / "config.json"
    if config.is_file():
        earlier = json.loads(config.read_text())
        if earlier.get("recipe") and earlier.get("stage"):
            return f"<recipe {earlier['recipe']} {earlier['stage']} run>/best.safetensors"
    return None


def portable_config(config: dict) -> dict:
    """The run's config as a user can rerun it: the recipe and stage, start weights by name (`start_name`), and
    no run folder of this machine."""
    portable = {k: v for k, v in config.items() if k not in ("out", "resume", "config") and v is not None}
    if config.get("init_weights"):
        name = start_name(config["init_weights"])
        if not name:
            raise NotPortable(f"init_weights {config['init_weights']} cannot be named as a shipped file, a recipe "
                              "or a recipe stage's run")
        portable["init_weights"] = name
    check_portable(portable)
    return portable


def photo_list() -> list[dict[str, str]]:
    """The entries of `scripts/get-training-photos.sh --list`: split, folder, name, package, version, path,
    licence, size, sha256, author."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "get-training-photos.sh"), "--list"],
                         check=True, capture_output=True, text=True).stdout
    keys = ("split", "folder", "name", "package", "version", "path", "licence", "size", "sha256", "author")
    return [dict(zip(keys, line.split(maxsplit=9))) for line in out.splitlines() if line.strip()]


def photo_folders(data: str) -> list[str]:
    """The folders of extra training photographs that `--data builtin+A+B` read (none for other data): the
    photo-list folders (mate-nature, ...) and bsds432."""
    if not data.startswith("builtin+"):
        return []
    names = {e["folder"] for e in photo_list()}
    folders = []
    for part in data[len("builtin+"):].removeprefix("folder:").split("+"):
        root = ROOT / part
        if not root.is_dir():
            continue
        if root.name in names or root.name == "bsds432":
            folders.append(root.name)  # one folder alone, e.g. builtin+.data/photos/mate-nature
        else:
            folders += sorted(p.name for p in root.iterdir() if p.is_dir())
    return folders


def training_data(folders: list[str]) -> tuple[list[str], int, list[str]]:
    """(the card's training-data lines, how many photographs, the extra photographs' licences) for
    scikit-image's training photographs plus the training split of the photo-list `folders`."""
    packages: dict[str, list[dict[str, str]]] = {}
    for entry in photo_list():
        if entry["split"] == "train" and entry["folder"] in folders:
            packages.setdefault(entry["package"], []).append(entry)
    lines, count, licences = [SKIMAGE_PHOTOS], 12, Counter()
    for package, entries in packages.items():
        per_licence = Counter(e["licence"] for e in entries)
        licences.update(per_licence)
        count += len(entries)
        each = ", ".join(f"{n} {name}" for name, n in per_licence.items())
        if len(per_licence) == 1:
            each = entries[0]["licence"]
        lines.append(
            f"{len(entries)} photograph{'s' * (len(entries) > 1)} of Debian's {package} {entries[0]['version']} "
            f"({each}), fetched by "
            f"scripts/get-training-photos.sh into .data/photos/{entries[0]['folder']}, which lists each file's "
            "path, author, licence and sha256 (docs/damage-and-data.md, Training photographs); not distributed "
            "with pyramidal")
    if "bsds432" in folders:
        lines.append(BSDS432)
        count += 432
        licences["BSDS500 research and education terms"] += 432
    return [*lines, NEVER_TRAINED_ON], count, list(licences)


def model_card(task: str, info: dict) -> dict:
    """Licence, data, intended use and limits for the record of a built-in weight file."""
    parameters = info.get("parameters")
    size = f"{parameters:,}-parameter " if parameters else ""
    data, photos, licences = training_data(info.get("training_photos", DEFAULT_PHOTO_FOLDERS))
    note = "The weights are released under pyramidal's MIT licence. " + (
        f"The training photographs beyond scikit-image's are {', '.join(licences)} (see training_data); whether "
        "trained weights are a derivative work of their training images is not settled. Weights free of them: "
        "retrain with the same command and --data builtin (public-domain and CC0 photographs only)."
        if licences else "They were trained on public-domain and CC0 photographs only.")
    return {
        "license": "MIT",
        "license_note": note,
        "training_data": data,
        "intended_use": f"{TASK_USE.get(task, task)}; a demonstration of the model family and a starting point "
                        "for fine-tuning (pyramidal train --init-weights).",
        "limits": f"A small {size}model trained for {info.get('steps', 0):,} steps on {photos} photographs, with 64-96 "
                  f"px patches, on {info.get('trained_on') or 'a CPU'}. It learned the task's synthetic damage exactly as `pyramidal degrade` "
                  f"makes it and transfers poorly to other damage ({OTHER_DAMAGE.get(task, OTHER_DAMAGE[''])}). "
                  "Below the best classical method in some "
                  "settings (see scores). It invents plausible detail: not for forensic, medical or "
                  "identification use.",
        "provenance": f"trained by `pyramidal train` with the command above ({info.get('device') or 'on the CPU'}, "
                      "bf16, each stage with its recipe's threads); packaged and scored by "
                      "scripts/package-builtin-weights.py",
    }


HOLE_SHAPES = ("squares", "block", "grid", "strokes")  # a mask-conditioned model's scores, one shape at a time


def scored_settings(result: dict, prefix: str) -> list[dict]:
    """The `scores` entries of an `evaluate` result: ours, the damaged input and the best classical row, in
    PSNR and SSIM, plus every row's PSNR (and hole PSNR where the task has holes)."""
    from pyramidal.evaluate import best_baseline

    scores = []
    for setting in result["settings"]:
        rows = setting["rows"]
        ours = next(r for r in rows if r["kind"] == "model")
        damaged = next(r for r in rows if r["kind"] == "input")
        best = best_baseline(rows)
        entry = {
            "setting": " ".join(part for part in (prefix, setting["label"]) if part),
            "ours_psnr": round(ours["psnr"], 3),
            "ours_ssim": round(ours["ssim"], 4),
            "damaged_psnr": round(damaged["psnr"], 3),
            "baseline": best["method"],
            "baseline_psnr": round(best["psnr"], 3),
            "baseline_ssim": round(best["ssim"], 4),
            "all": {r["method"]: r["psnr"] and round(r["psnr"], 3) for r in rows},
        }
        if ours.get("psnr_hole") is not None:
            entry["all_hole"] = {r["method"]: r["psnr_hole"] and round(r["psnr_hole"], 3) for r in rows}
        scores.append(entry)
    return scores


def weights_record(task: str, model, task_options: dict, config: dict, steps: int, val_psnr: float | None,
                   command: str) -> dict:
    """The part of a built-in file's record every packaging writes: task, size, data, steps, command, config."""
    from pyramidal.models.summary import count_parameters

    return {
        "task": task,
        "task_options": task_options,
        "parameters": count_parameters(model),
        "data": config["data"],
        "training_photos": photo_folders(config["data"]),
        "steps": steps,
        "val_psnr_64px": val_psnr,
        "command": command,
        "config": portable_config(config),
        "dtype": "float16",
    }


def score_and_save(model, out: Path, task: str, metadata: dict, baselines: str = "all") -> None:
    """Write the fp16 file, score it as a user would load it, and write it again with its scores."""
    from pyramidal.checkpoint import save_weights
    from pyramidal.evaluate import evaluate

    check_portable(metadata)
    save_weights(model, out, metadata, half=True)
    # A mask-conditioned model is also scored on each hole shape alone (setting "task=T"), given the true mask
    # as the classical rows are.
    result = evaluate(str(out), task, "builtin", baselines=baselines)
    scores = scored_settings(result, "")
    if model.conditions.mask_input:
        for hole_task in HOLE_SHAPES:
            with warnings.catch_warnings():  # "trained for task inpaint, not squares": meant here
                warnings.simplefilter("ignore")
                shape = evaluate(str(out), hole_task, "builtin", baselines=baselines)
            scores += scored_settings(shape, f"task={hole_task}")
    metadata["scores"] = scores
    metadata["evaluated_on"] = result["described"]
    check_portable(metadata)
    save_weights(model, out, metadata, half=True)
    print(f"{task}: {out} ({out.stat().st_size / 1e6:.2f} MB)")
    for s in scores:
        best = f"{s['baseline']} {s['baseline_psnr']:.2f} dB" if s["baseline"] else ""
        print(f"  {s['setting'] or '-':>12}  ours {s['ours_psnr']:.2f} dB  {best}  damaged {s['damaged_psnr']:.2f} dB")


# Flags of the campaign's command line that name folders of the machine it ran on.
CAMPAIGN_PATH_FLAGS = ("--out", "--work", "--benchmark")


def campaign_command(argv: list[str]) -> str:
    """The campaign's command line without its folders (they are the device machine's)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in CAMPAIGN_PATH_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in CAMPAIGN_PATH_FLAGS:
            continue
        kept.append(arg)
    return "scripts/gpu-campaign.sh " + " ".join(kept)


def flops_per_pixel(model) -> float:
    from pyramidal.bench.measure import count_flops

    return count_flops(model, 64, train=False) / 64**2


def campaign_main(archive: str, out: str | None = None, baselines: str = "all") -> Path:
    """Package a GPU campaign's LABEL.tar: its fp16 weights, with the recipe, the device and the steps once."""
    import tarfile
    import tempfile

    from pyramidal.checkpoint import load_weights, read_weights_info
    from pyramidal.hub import available_builtin_weights, builtin_weights_path

    with tempfile.TemporaryDirectory(prefix="pyramidal-campaign-") as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise NotPortable(f"{archive}: not a campaign archive ({exc})") from None
        folder = Path(tmp)
        weights = [p for p in folder.glob("*.safetensors")]
        if len(weights) != 1 or not (folder / "run" / "config.json").is_file():
            raise NotPortable(f"{archive}: not a campaign archive (expected LABEL.safetensors and run/config.json)")
        label = weights[0].stem
        model = load_weights(weights[0])
        record = read_weights_info(weights[0])
        config = json.loads((folder / "run" / "config.json").read_text())
        campaign = json.loads((folder / f"{label}-scores.json").read_text())
    task = record["task"]
    recipe = shipped_recipe(config.get("recipe"), f"{archive} (entry {label})")
    start = config.get("init_weights")
    # Steps counted once: this run's best weights, plus the shipped file's own total when it started from it.
    steps = int(record.get("steps") or 0)
    chain = ""
    if start:
        if not str(start).startswith("builtin:"):
            raise NotPortable(f"{archive}: the campaign run started from {start}, which a user cannot name")
        steps += int(read_weights_info(builtin_weights_path(str(start).split(":", 1)[1]))["steps"])
        chain = recipe_command(recipe) + " && "
    device = campaign.get("machine", {}).get("gpu") or campaign.get("machine", {}).get("cpu") or "unknown"
    if out is None:
        if label != task:
            raise NotPortable(f"{archive}: entry {label} is not the task's default file {task}: give --out FILE")
        if task in available_builtin_weights():
            ratio = flops_per_pixel(model) / flops_per_pixel(load_weights(builtin_weights_path(task)))
            if ratio > 1.5:
                raise NotPortable(f"{archive}: {ratio:.1f}× the shipped model's FLOPs per pixel, too slow for a 12 MP "
                                  "photo on a CPU as the default: ship it as a second, named file (--out FILE)")
        target = WEIGHTS / f"{task}.safetensors"
    else:
        target = Path(out)
    run = campaign.get("entry", {}).get("run", {})
    metadata = {
        **weights_record(task, model, record.get("task_options", {}), config, steps, record.get("val_psnr_64px"),
                         chain + campaign_command(campaign.get("argv", []))),
        "trained_on": f"one {device}",
        "campaign": record.get("campaign", {}),
    }
    metadata.update(model_card(task, metadata))
    metadata["provenance"] = (
        f"trained by scripts/gpu-campaign.sh on one {device} ({run.get('steps')} steps of batch "
        f"{run.get('batch_size')}, {config.get('precision')}, "
        + (f"from the shipped weights ({start})" if start else "from scratch")
        + ") with the command above; packaged and scored by scripts/package-builtin-weights.py")
    score_and_save(model, target, task, metadata, baselines)
    return target


def main(task: str, run_dir: str, baselines: str = "all") -> None:
    from pyramidal.checkpoint import load_weights, read_weights_info
    from pyramidal.hub import resolve_init_weights

    run = Path(run_dir)
    model = load_weights(run / "best.safetensors")
    info = model.info
    config = json.loads((run / "config.json").read_text())
    recipe = shipped_recipe(config.get("recipe"), str(run))
    out = ROOT / "pyramidal" / "weights" / f"{task}.safetensors"
    # Steps counted once: each earlier stage's best weights, back to the recipe's start; a packaged start (a
    # shipped file) brings its own total.
    steps = info.get("step", info.get("steps"))
    previous = config.get("init_weights")
    while previous:
        previous = resolve_init_weights(previous)  # builtin:TASK → the packaged file
        record = read_weights_info(previous)
        steps += record["steps"]
        if "command" in record:  # a packaged file: its total already counts its own chain
            break
        previous = json.loads((previous.parent / "config.json").read_text()).get("init_weights")
    command = recipe_command(recipe)
    metadata = weights_record(task, model, info.get("task_options", {}), config, steps, info.get("val_psnr"),
                              command)
    metadata.update(model_card(task, metadata))
    score_and_save(model, out, task, metadata, baselines)


def refresh_card(task: str) -> None:
    """Rewrite the record of a shipped file (model card, portable config) without touching its tensors."""
    from safetensors.torch import load_file

    from pyramidal.checkpoint import read_weights_info, save_state

    path = WEIGHTS / f"{task}.safetensors"
    info = read_weights_info(path)
    info.setdefault("training_photos", DEFAULT_PHOTO_FOLDERS)
    info.update(model_card(task, info))
    info["config"] = portable_config(info["config"])
    check_portable(info)
    save_state(load_file(str(path)), path, info)
    print(f"{task}: record and card written into {path}")


if __name__ == "__main__":
    try:
        if len(sys.argv) >= 3 and sys.argv[1] == "--card":
            for name in sys.argv[2:]:
                refresh_card(name)
        elif len(sys.argv) >= 3 and sys.argv[1] == "--campaign":
            import argparse

            parser = argparse.ArgumentParser(prog="package-builtin-weights.py --campaign")
            parser.add_argument("archive")
            parser.add_argument("--out", help="the weight file to write [pyramidal/weights/TASK.safetensors]")
            parser.add_argument("--baselines", default="all", help="classical rows scored beside it [all]")
            args = parser.parse_args(sys.argv[2:])
            campaign_main(args.archive, args.out, args.baselines)
        elif len(sys.argv) == 5 and sys.argv[1] == "--baselines":  # e.g. fast: no BM3D in the recorded scores
            main(sys.argv[3], sys.argv[4], sys.argv[2])
        elif len(sys.argv) == 3:
            main(sys.argv[1], sys.argv[2])
        else:
            sys.exit(__doc__)
    except NotPortable as exc:
        sys.exit(f"package-builtin-weights.py: {exc}")
