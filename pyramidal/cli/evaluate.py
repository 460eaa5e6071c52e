"""`pyramidal evaluate --task T --weights W`: PSNR/SSIM of a model against classical baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "score a model against classical baselines (PSNR/SSIM on fixed eval damage); table, JSON, Markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="damage task (noise, pixelate, blur, jpeg, squares, ...)")
    parser.add_argument("--weights", default="builtin",
                        help="'builtin' (default), a .safetensors file, or 'none' for the baselines alone")
    parser.add_argument("--data", default="builtin", help="builtin (default), folder:PATH or celeba:PATH")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="evaluation split (default val)")
    parser.add_argument("--crop", type=int, default=None,
                        help="crop side in px, 0 = whole images (default 256; 64 for squares, block, grid)")
    parser.add_argument("--crops", type=int, default=None,
                        help="fixed crops per built-in photograph (default 16 for the hole tasks at 64 px, else 1)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N images")
    parser.add_argument("--sigma", type=float, nargs="+", help="noise: report only these σ (default 25 50 125)")
    parser.add_argument("--quality", type=int, nargs="+", help="jpeg: report only these qualities (default 10 5)")
    parser.add_argument("--factor", type=int, nargs="+", help="pixelate: scale factor(s) (default 8)")
    parser.add_argument("--baselines", default="auto", choices=("auto", "none", "fast", "all"),
                        help="classical baselines: fast skips BM3D; auto runs BM3D up to 16 images (default)")
    parser.add_argument("--ensemble", action="store_true", help="also report the 8-fold self-ensemble as a row")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the results as Markdown")
    parser.add_argument("--figures", metavar="DIR",
                        help="write a figure per setting: ground truth / damaged / best classical / model")
    parser.add_argument("--tile", type=int, default=256, help="restore tile side, 0 = whole image (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in px (default 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")


def settings_from_args(args: argparse.Namespace) -> list[dict] | None:
    """--sigma / --quality / --factor as a list of task option dicts (None: the task's eval settings)."""
    from pyramidal.errors import PyramidalError

    given = {"sigma": ("noise", args.sigma), "quality": ("jpeg", args.quality), "factor": ("pixelate", args.factor)}
    chosen = None
    for key, (task, values) in given.items():
        if values is None:
            continue
        if args.task != task:
            raise PyramidalError(f"--{key} applies to --task {task}, not {args.task}")
        chosen = [{key: int(v) if float(v).is_integer() else v} for v in values]
    return chosen


def write_figures(result: dict, folder: str, rows: int = 4) -> list[str]:
    """One PNG per setting: ground truth, damaged, best classical method, model (and ensemble)."""
    from pathlib import Path

    from pyramidal.compare import spread
    from pyramidal.evaluate import best_baseline, psnr
    from pyramidal.figures import image_grid

    written = []
    for setting, images in zip(result["settings"], result["images"]):
        best = best_baseline(setting["rows"])
        methods = ["damaged"]
        titles = ["ground truth", "damaged"]
        if best is not None and best["kind"] == "baseline":
            methods.append(best["method"])
            titles.append(best["method"].split(" (")[0])
        for r in setting["rows"]:
            if r["kind"] in ("model", "ensemble"):
                methods.append(r["method"])
                titles.append("model + ensemble" if r["kind"] == "ensemble" else "model")
        grid, captions = [], []
        for i in spread(len(images["clean"]), rows):
            clean = images["clean"][i]
            grid.append([clean] + [images[m][i] for m in methods])
            captions.append([result["image_names"][i]] + [f"{psnr(clean, images[m][i]):.2f} dB" for m in methods])
        suffix = ("_" + setting["label"].replace("=", "").replace(", ", "_")) if setting["label"] else ""
        path = Path(folder) / f"{result['task']}{suffix}.png"
        title = f"{result['task']} {setting['label']}".strip() + f" — {result.get('model') or 'baselines only'}"
        image_grid(grid, path, column_titles=titles, captions=captions, title=title)
        written.append(str(path))
    return written


def run(args: argparse.Namespace) -> int:
    from pyramidal.evaluate import evaluate, format_markdown, format_table, write_json, write_text

    weights = None if args.weights == "none" else args.weights
    if weights not in (None, "builtin"):
        from pyramidal.checkpoint import read_sidecar

        trained_for = read_sidecar(weights).get("task") if Path(weights).exists() else None
        if trained_for and trained_for != args.task:
            print(f"pyramidal evaluate: warning: {weights} was trained for task {trained_for!r}, not {args.task!r}",
                  file=sys.stderr)
    crop = "auto" if args.crop is None else args.crop
    result = evaluate(
        weights, args.task, args.data, split=args.split, crop=crop, crops=args.crops, limit=args.limit,
        settings=settings_from_args(args), baselines=args.baselines, ensemble=args.ensemble,
        tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        precision=args.precision, keep_images=bool(args.figures),
        progress=lambda msg: print(f"  … {msg}", file=sys.stderr, flush=True),
    )
    print(format_table(result))
    written = []
    if args.json:
        write_json(result, args.json)
        written.append(args.json)
    if args.markdown:
        write_text(format_markdown(result), args.markdown)
        written.append(args.markdown)
    if args.figures:
        written += write_figures(result, args.figures)
    for path in written:
        print(f"wrote {path}")
    return 0
