"""A task declared in one place reaches every command: the example of docs/adding-a-task.md, run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyramidal import damage
from pyramidal.cli import build_parser, main

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-a-task.md"


def example_code() -> str:
    """The first Python block of docs/adding-a-task.md: the class a contributor adds to damage.py."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, f"{DOC}: no python example"
    return blocks[0]


@pytest.fixture
def impulse():
    """Registers the documented task as if appended to damage.py; the registry is restored afterwards."""
    saved = dict(damage.TASKS._items)
    try:
        exec(compile(example_code(), str(DOC), "exec"), dict(vars(damage)))
        yield damage.TASKS.get("impulse")
    finally:
        damage.TASKS._items.clear()
        damage.TASKS._items.update(saved)
    assert "impulse" not in damage.TASKS


def test_the_task_itself(impulse):
    x = np.random.default_rng(0).integers(1, 255, (2, 3, 64, 64), dtype=np.uint8)  # no pure black or white
    import torch

    out, mask = damage.create_task("impulse", amount=0.2).apply(torch.from_numpy(x), seeds=[1, 2])
    hit = mask[:, 0].numpy()
    assert 0.15 < hit.mean() < 0.25
    values = out.numpy().transpose(1, 0, 2, 3)[:, hit]  # 3 × (pixels hit)
    assert set(np.unique(values)) <= {0, 255} and np.array_equal(out.numpy()[~np.repeat(mask.numpy(), 3, 1)],
                                                                x[~np.repeat(mask.numpy(), 3, 1)])
    assert damage.create_task("impulse", amount=0.2).options == {"amount": 0.2}


def test_degrade_picks_it_up(impulse, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(src)
    assert main(["degrade", "--task", "impulse", "--amount", "0.5", str(src), "-o", str(tmp_path / "out")]) == 0
    damaged = np.asarray(Image.open(tmp_path / "out" / "in.png"))
    changed = (damaged != 128).any(axis=2).mean()
    assert 0.4 < changed < 0.6
    assert main(["degrade", "--task", "blur", "--amount", "0.5", str(src), "-o", str(tmp_path / "o2")]) == 2
    assert "amount" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["degrade", "--help"])
    help_text = capsys.readouterr().out
    assert re.search(r"^ +impulse +" + re.escape(impulse.description) + "$", help_text, re.M), help_text
    assert "--amount AMOUNT" in help_text


def test_evaluate_picks_it_up(impulse, tmp_path):
    report = tmp_path / "r.json"
    assert main(["evaluate", "--task", "impulse", "--weights", "none", "--amount", "0.1", "0.3", "--limit", "1",
                 "--crop", "48", "--baselines", "fast", "--json", str(report), "--device", "cpu"]) == 0
    result = json.loads(report.read_text())
    assert [s["label"] for s in result["settings"]] == ["amount=0.1", "amount=0.3"]
    methods = [r["method"] for r in result["settings"][0]["rows"]]
    assert methods == ["damaged input", "OpenCV Telea inpainting (true mask)",
                       "OpenCV Navier–Stokes inpainting (true mask)"]
    rows = {r["method"]: r["psnr"] for r in result["settings"][1]["rows"]}
    assert rows["OpenCV Telea inpainting (true mask)"] > rows["damaged input"]  # the mask reached the baseline


def test_evaluate_uses_the_task_crop_policy(impulse, monkeypatch):
    from pyramidal.evaluate import default_crop, default_crops

    monkeypatch.setattr(impulse, "eval_crop", 32)
    monkeypatch.setattr(impulse, "eval_crops", 4)
    assert (default_crop("impulse"), default_crops("impulse")) == (32, 4)


def test_train_picks_it_up(impulse):
    from pyramidal.cli.train import overrides_from_args
    from pyramidal.config import resolve_config

    args = build_parser().parse_args(["train", "--task", "impulse", "--amount", "0.2"])
    config = resolve_config(overrides_from_args(args))
    assert config.task == "impulse" and config.task_kwargs() == {"amount": 0.2}
    task = damage.create_task(config.task, train=True, **config.task_kwargs())
    assert task.amount == 0.2 and task.has_mask
