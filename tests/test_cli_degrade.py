"""`pyramidal degrade` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyramidal.cli import main
from pyramidal.damage import TASKS

from helpers import cli, one_error, picture


def save(path, h, w, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 4 if mode == "RGBA" else 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    return [
        save(d / "colour.png", 37, 53),
        save(d / "grey.jpg", 20, 9, mode="L"),
        save(d / "alpha.png", 1, 1, mode="RGBA"),
    ]


def test_degrade_end_to_end_with_one_bad_file(tmp_path, inputs, capsys):
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    rc = main(["degrade", "--task", "noise", "--sigma", "30", *map(str, inputs[:1]), str(bad),
               *map(str, inputs[1:]), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err == [f"pyramidal degrade: error: {bad}: not a readable image"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alpha.png", "colour.png", "grey.png"]
    for src in inputs:
        with Image.open(out / (src.stem + ".png")) as im:
            assert im.mode == "RGB" and im.format == "PNG"
            with Image.open(src) as orig:
                assert im.size == orig.size


@pytest.mark.parametrize("task", TASKS.names())
def test_degrade_every_task_is_reproducible(tmp_path, inputs, task):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["degrade", "--task", task, "--seed", "4", *map(str, inputs), "-o", str(a)]) == 0
    assert main(["degrade", "--task", task, "--seed", "4", *map(str, inputs), "-o", str(b)]) == 0
    for src in inputs:
        name = src.stem + ".png"
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_degrade_seed_and_options_change_output(tmp_path, inputs):
    runs = {}
    for key, extra in {"s0": [], "s1": ["--seed", "1"], "q": ["--quality", "60"]}.items():
        assert main(["degrade", "--task", "jpeg" if key == "q" else "squares", *extra, str(inputs[0]),
                     "-o", str(tmp_path / key)]) == 0
        runs[key] = np.asarray(Image.open(tmp_path / key / "colour.png"))
    assert not np.array_equal(runs["s0"], runs["s1"])


def test_degrade_never_overwrites_inputs(tmp_path, capsys):
    src = save(tmp_path / "x.png", 16, 16)
    before = src.read_bytes()
    rc = main(["degrade", "--task", "blur", str(src), "-o", str(tmp_path)])
    assert rc != 0 and src.read_bytes() == before
    assert "overwrite" in capsys.readouterr().err


def test_degrade_bad_options(tmp_path, inputs, capsys):
    assert main(["degrade", "--task", "blur", "--sigma", "3", str(inputs[0]), "-o", str(tmp_path / "o")]) == 2
    assert "sigma" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # an unknown task is refused while the flags are parsed
        main(["degrade", "--task", "smudge", str(inputs[0]), "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--task" in err[0] and "choose one of" in err[0]


def test_degrade_folder_input(tmp_path, inputs, capsys):
    (tmp_path / "in" / "readme.txt").write_text("not an image")
    out = tmp_path / "in" / "damaged"  # output inside the input folder
    assert main(["degrade", "--task", "gray", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert "readme.txt" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "colour.png", "grey.png"]
    # Running again does not pick up the earlier outputs as inputs; it replaces them only when asked to.
    assert main(["degrade", "--task", "gray", str(tmp_path / "in"), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["degrade", "--task", "gray", str(tmp_path / "in"), "-o", str(out), "--overwrite"]) == 0
    assert not (out / "damaged").exists()


def test_degrade_into_its_input_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(3):
        picture(folder / f"p{i}.png", 16, 16, i)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = cli(["degrade", "--task", "noise", str(folder), "-o", str(folder)], capsys)
    assert code == 2
    one_error(err, "would replace an input file")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
