"""pyramidal.checkpoint: a bad weight record or a checkpoint holding Python objects is one line naming the file; a
run folder, its last.ckpt or its best.safetensors serve as weights everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from pyramidal.checkpoint import (
    FOLDER_CONFIG,
    FOLDER_WEIGHTS,
    METADATA_KEY,
    load_checkpoint,
    load_init_weights,
    load_weights,
    read_weights_info,
    save_pretrained,
    save_state,
    save_weights,
    sidecar_path,
)
from pyramidal.cli import main
from pyramidal.errors import PyramidalError
from pyramidal.hub import WEIGHTS_DIR, available_builtin_weights, list_recipes
from pyramidal.hub import create_model as create_pretrained
from pyramidal.models import create_model

from helpers import EVAL, FAST, cli, one_error, picture


@pytest.mark.parametrize("options, needle", [
    ("abc", "options must be a table"),
    ({"m": "abc"}, "option m must be a whole number"),
    ({"m": -4}, "option m must be a whole number >= 1, got -4"),
    ({"m": 10**8}, "more than the limit"),
    ({"nonsense": 1}, "unknown option"),
])
@pytest.mark.parametrize("where", ["embedded", "sidecar"])
def test_bad_weight_record_is_one_line_naming_the_file(tmp_path, capsys, options, needle, where):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in create_model("pyramidal44", m=8, growth=4).state_dict().items()}
    path = tmp_path / "bad.safetensors"
    record = {"model": "pyramidal44", "options": options, "task": "noise"}
    if where == "embedded":
        save_state(state, path, record, sidecar=False)
    else:  # an older file: the record only in the JSON sidecar
        save_file(state, str(path))
        path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(PyramidalError, match=needle):
        load_weights(path)
    img = picture(tmp_path / "a.png", 8, 8)
    code, _, err = cli(["restore", "--weights", str(path), str(img), "-o", str(tmp_path / "out"), *FAST], capsys)
    assert code == 2
    one_error(err, str(path), needle)
    assert not (tmp_path / "out").exists()


def test_malicious_checkpoint_is_refused_plainly(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "pyramidal-train-checkpoint", "x": Payload()}, evil)
    with pytest.raises(PyramidalError, match="holds Python objects that pyramidal refuses to load") as info:
        load_checkpoint(evil)
    assert "weights_only" not in str(info.value) and "corrupt" not in str(info.value)
    img = picture(tmp_path / "a.png", 8, 8)
    code, out, err = cli(["restore", "--weights", str(evil), str(img), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and "should-never-run" not in out
    assert "weights_only" not in one_error(err, str(evil), "refuses to load")


def test_weights_as_run_folder_or_checkpoint_everywhere(trained_run, tmp_path, capsys):
    img = picture(tmp_path / "a.png", 20, 20)
    for i, weights in enumerate((trained_run, trained_run / "last.ckpt", trained_run / "best.safetensors")):
        code, _, err = cli(["restore", "--task", "noise", "--weights", str(weights), str(img),
                            "-o", str(tmp_path / f"out{i}"), *FAST], capsys)
        assert code == 0, err
        assert (tmp_path / f"out{i}" / "a.png").exists()
    code, out, err = cli(["evaluate", *EVAL[:2], "--weights", str(trained_run / "last.ckpt"), *EVAL[4:],
                          "--data", f"folder:{img.parent}", "--limit", "1"], capsys)
    assert code == 0 and "model basic21" in out, err
    from pyramidal.web.engine import weights_choices

    choices = weights_choices([trained_run, trained_run / "last.ckpt"])  # `serve --weights`
    assert [c.task for c in choices[1:]] == ["noise", "noise"] and choices[2].path.suffix == ".ckpt"




def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("basic21", channels=(4, 8, 8)).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def restore_cli(tmp_path, weights) -> int:
    image = tmp_path / "in.png"
    Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(image)
    return main(["restore", "--weights", str(weights), str(image), "-o", str(tmp_path / "out"), *FAST])


def test_the_record_is_inside_the_file(tmp_path):
    model = tiny()
    path = tmp_path / "run" / "best.safetensors"
    save_weights(model, path, {"task": "noise", "scores": [{"setting": "sigma=50", "ours_psnr": 25.0}]})
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert all(isinstance(v, str) for v in meta.values())  # safetensors metadata is str → str
    record = json.loads(meta[METADATA_KEY])
    assert record["model"] == "basic21" and record["options"]["channels"] == [4, 8, 8]
    assert record["task"] == "noise" and record["scores"][0]["ours_psnr"] == 25.0
    assert json.loads(sidecar_path(path).read_text()) == record  # the sidecar is a readable copy


def test_a_copied_file_without_its_sidecar_loads(tmp_path):
    model = tiny()
    save_weights(model, tmp_path / "best.safetensors", {"task": "noise"})
    lonely = tmp_path / "elsewhere" / "mine.safetensors"
    lonely.parent.mkdir()
    shutil.copy(tmp_path / "best.safetensors", lonely)
    assert not sidecar_path(lonely).exists()
    loaded = load_weights(lonely)
    assert same_weights(model, loaded) and loaded.info["task"] == "noise"
    assert restore_cli(tmp_path, lonely) == 0


def test_an_older_file_with_only_a_sidecar_still_loads(tmp_path):
    model = tiny()
    path = tmp_path / "old.safetensors"
    # The earlier layout: the architecture only in the sidecar, the file's metadata naming the model alone.
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"model": "basic21"})
    sidecar_path(path).write_text(json.dumps({**model.spec, "task": "jpeg"}))
    loaded = load_weights(path)
    assert same_weights(model, loaded) and loaded.info["task"] == "jpeg"
    assert restore_cli(tmp_path, path) == 0
    sidecar_path(path).unlink()
    with pytest.raises(PyramidalError, match="no architecture recorded"):
        load_weights(path)


def test_the_embedded_record_wins_over_a_stale_sidecar(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(tiny(), path, {"task": "noise"})
    sidecar_path(path).write_text(json.dumps({"model": "pyramidal51", "task": "squares"}))
    assert read_weights_info(path)["task"] == "noise"


@pytest.mark.parametrize("embedded", [True, False], ids=["self-contained", "config.json only"])
def test_a_hugging_face_style_folder_loads(tmp_path, embedded):
    model = tiny()
    folder = tmp_path / "hf"
    if embedded:
        save_pretrained(model, folder, {"task": "noise"})
    else:  # what a from_pretrained user may assemble by hand: plain tensors plus config.json
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / FOLDER_WEIGHTS))
        (folder / FOLDER_CONFIG).write_text(json.dumps({**model.spec, "task": "noise"}))
    assert same_weights(model, load_weights(folder))
    assert same_weights(model, create_pretrained("basic21", pretrained=folder))
    assert restore_cli(tmp_path, folder) == 0
    fresh = create_model("basic21", channels=(4, 8, 8))
    load_init_weights(fresh, str(folder))
    assert same_weights(model, fresh)


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PyramidalError, match="folder holds no model.safetensors"):
        load_weights(tmp_path / "empty")


@pytest.mark.parametrize("task", available_builtin_weights())
def test_builtin_files_carry_licence_provenance_and_card(task):
    path = WEIGHTS_DIR / f"{task}.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        record = json.loads(fh.metadata()[METADATA_KEY])
        assert all(fh.get_tensor(k).dtype in (torch.float16, torch.int64) for k in fh.keys())
    assert record["model"] == "pyramidal23456" and record["task"] == task
    assert record["license"] == "MIT" and "GPL-2+" in record["license_note"]
    data = " ".join(record["training_data"])
    assert "mate-backgrounds" in data and "GPL-2+" in data and "scikit-image" in data
    assert record["intended_use"] and record["limits"] and record["provenance"] and record["scores"]
    # Every command it records runs from an installed package: the --recipe names are shipped recipes, found
    # by name inside the package (never a file that happens to exist on this machine).
    names = re.findall(r"--recipe (\S+)", record["command"])
    assert names and all(name in list_recipes() for name in names), names
    assert record["config"]["recipe"] == task and "config" not in record["config"]


def test_weights_command_shows_the_model_card(capsys):
    assert main(["weights", "noise"]) == 0
    card = capsys.readouterr().out
    for part in ("licence", "MIT", "GPL-2+", "intended use", "limits", "pyramidal train --recipe noise",
                 "sigma=50"):
        assert part in card, part
