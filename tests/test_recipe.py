"""Recipes: one TOML file per shipped weight file, its stages chained by `pyramidal train --recipe`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyramidal.cli import main
from pyramidal.config import resolve_config
from pyramidal.errors import PyramidalError
from pyramidal.hub import available_builtin_weights, list_recipes
from pyramidal.recipe import load_recipe, parse_stages, run_recipe, stage_run

from helpers import REPO

TINY = '''task = "noise"
model = "pyramidal44"
m = 8
growth = 4
data = "builtin"
size = 32
batch_size = 4
patches_per_epoch = 8
val_images = 4
log_images = 0
precision = "fp32"
device = "cpu"
threads = 1
quiet = true
steps = 2
'''


def write_recipe(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_resolves_stage_by_stage(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.stages
    for index in range(len(recipe.stages)):
        config = resolve_config(recipe.settings(index))
        assert config.task == recipe.shared.get("task", config.task)
        assert config.steps and config.steps > 0


def test_every_shipped_weight_file_has_its_recipe():
    assert set(available_builtin_weights()) <= set(list_recipes())


def test_stage_tables_merge_into_the_shared_ones(tmp_path):
    path = write_recipe(tmp_path, TINY + '[task_options]\nsigma = 25.0\n\n[[stage]]\nname = "a"\n\n'
                                         '[[stage]]\nlr = 1e-4\n[stage.task_options]\nunclipped = 0.5\n')
    recipe = load_recipe(path)
    assert recipe.settings(0)["task_options"] == {"sigma": 25.0}
    assert recipe.settings(1)["task_options"] == {"sigma": 25.0, "unclipped": 0.5}
    assert recipe.settings(1)["lr"] == 1e-4 and "lr" not in recipe.settings(0)
    assert [recipe.stage_name(i) for i in range(2)] == ["stage-1-a", "stage-2"]


@pytest.mark.parametrize("text, message", [
    (TINY, "give at least one \\[\\[stage\\]\\] table"),
    (TINY + 'out = "x"\n[[stage]]\n', "out is set by the recipe runner itself"),
    (TINY + '[[stage]]\ninit_weights = "builtin:noise"\n', "only the shared settings may give init_weights"),
    (TINY + '[[stage]]\nname = "a"\n[[stage]]\nname = "a"\n', "two stages have the same name"),
    (TINY + '[[stage]]\nname = "a b"\n', "stage name 'a b'"),
    (TINY + '[[stage]]\nlearning_rate = 1\n', "stage 1: unknown option 'learning_rate'"),
    (TINY + '[[stage]]\nsteps = "many"\n', "stage 1: steps must be a number"),
    ("task = [\n", "cannot read"),
])
def test_a_bad_recipe_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(PyramidalError, match=message):
        load_recipe(write_recipe(tmp_path, text))


def test_an_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(PyramidalError, match="no such recipe.*noise"):
        load_recipe("nonesuch")


def test_stages_are_chosen_one_based_and_checked():
    assert list(parse_stages(None, 3)) == [0, 1, 2]
    assert list(parse_stages("2-3", 3)) == [1, 2] and list(parse_stages("1", 3)) == [0]
    for bad in ("0", "4", "3-2", "x"):
        with pytest.raises(PyramidalError, match=f"stages='{bad}': give K or K-L") as raised:
            parse_stages(bad, 3)
        assert raised.value.flags.startswith(f"--stages {bad}: ")  # as the command line words it


def test_a_recipe_chains_its_stages_and_continues_where_it_stopped(tmp_path):
    path = write_recipe(tmp_path, TINY + '[[stage]]\nname = "first"\n\n[[stage]]\nlr = 1e-4\nseed = 1\n')
    out = tmp_path / "runs"
    lines = []
    last = run_recipe(path, out, log=lines.append)
    first = stage_run(out / "tiny" / "stage-1-first")
    assert first is not None and last == stage_run(out / "tiny" / "stage-2")
    second = json.loads((last / "config.json").read_text())
    assert second["init_weights"] == str(first / "best.safetensors")  # stage 2 starts from stage 1's best
    assert second["recipe"] == "tiny" and second["stage"] == "stage-2" and second["lr"] == 1e-4
    assert json.loads((first / "config.json").read_text()).get("init_weights") is None
    lines.clear()
    assert run_recipe(path, out, log=lines.append) == last  # finished stages are not trained again
    assert sum("trained already" in line for line in lines) == 2
    assert len(list((out / "tiny").glob("*/*/*/*/last.ckpt"))) == 2


def test_a_later_stage_alone_needs_its_start(tmp_path, weights):
    path = write_recipe(tmp_path, TINY.replace('model = "pyramidal44"\nm = 8\ngrowth = 4\n', 'model = "basic21"\n'
                        'channels = [4, 8, 8]\n') + '[[stage]]\n\n[[stage]]\nlr = 1e-4\n')
    with pytest.raises(PyramidalError, match="stage 2 of recipe tiny starts from stage 1's best weights"):
        run_recipe(path, tmp_path / "runs", stages="2")
    run = run_recipe(path, tmp_path / "runs", stages="2", overrides={"init_weights": str(weights)}, log=lambda _: 0)
    assert json.loads((run / "config.json").read_text())["init_weights"] == str(weights)


def test_a_recipe_reference_needs_the_other_recipe_first(tmp_path):
    path = write_recipe(tmp_path, TINY + 'init_weights = "recipe:inpaint"\n[[stage]]\n')
    with pytest.raises(PyramidalError, match="run `run_recipe\\('inpaint', '"):
        run_recipe(path, tmp_path / "runs")


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "noise", "--config", "quick"], "without --config or --resume"),
    (["--stages", "2"], "--stages selects stages of a recipe"),
    (["--recipe", "noise", "--stages", "9"], "--stages 9"),
    (["--recipe", "nonesuch"], "no such recipe"),
])
def test_train_recipe_flags_fail_in_one_line(capsys, argv, message):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_recipes_that_start_from_another_recipe_train_after_it():
    """scripts/train-builtin.sh trains a recipe with init_weights = "recipe:X" in a second round, after X: X must
    be a shipped recipe that does not itself start from another, and the script must say so."""
    import tomllib

    from pyramidal.hub import RECIPES_DIR

    derived = {}
    for path in RECIPES_DIR.glob("*.toml"):
        init = tomllib.loads(path.read_text()).get("init_weights")
        if init:
            assert init.startswith("recipe:"), f"{path.name}: a recipe starts from another recipe, by name"
            derived[path.stem] = init.removeprefix("recipe:")
    assert derived, "squares, block and grid start from what the inpaint recipe makes"
    for recipe, source in derived.items():
        assert (RECIPES_DIR / f"{source}.toml").is_file(), recipe
        assert source not in derived, f"{recipe} starts from {source}, which starts from another recipe"
    script = (REPO / "scripts" / "train-builtin.sh").read_text()
    assert """grep -q '^init_weights *= *"recipe:'""" in script and 'train_set "${after[@]}"' in script
