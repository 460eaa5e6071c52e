"""What a model takes besides the image: one `Conditions` per model, the same from its options and from the
built model, one `model_input` that training and inference both run the model on, one `check_task`."""

from __future__ import annotations

import pytest
import torch

from pyramidal.checkpoint import load_weights, save_weights
from pyramidal.damage import MAGENTA, TASKS, create_task
from pyramidal.data.loader import make_loader
from pyramidal.data.sources import load_source
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.inference import restore_array
from pyramidal.models import create_model, list_models
from pyramidal.models.blocks import magenta_holes
from pyramidal.models.conditions import (
    BLIND,
    Conditions,
    check_task,
    conditions_of,
    example_input,
    model_input,
)
from pyramidal.options import RestoreOptions
from pyramidal.step import model_output, training_conditions

# Every kind of conditioning a model option asks for (noise_map: dense pyramids only).
CONDITIONING = [{}, {"mask_input": True}, {"mask_input": True, "hole_fill": "smooth"}, {"find_holes": "magenta"},
                {"find_holes": "magenta", "hole_fill": "smooth"}, {"noise_map": True}]


def _small(name: str) -> dict:
    """Options that make registered model `name` tiny, whatever its family."""
    with torch.device("meta"):
        model = create_model(name)
    if hasattr(model.config, "growth"):
        return {"m": 4, "growth": 2}
    return {"channels": (4,) * (model.levels + 1)}


def _takes(name: str, options: dict) -> bool:
    """Whether model `name` has every option of `options` (the autoencoders have no noise_map)."""
    with torch.device("meta"):
        config = create_model(name).config
    return all(hasattr(config, key) for key in options)


CASES = [pytest.param(name, options, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'blind'}")
         for name in list_models() for options in CONDITIONING if _takes(name, options)]


class Seen(Exception):
    """Raised by a forward pre-hook with the model's input."""


def _task_for(conditions: Conditions) -> str:
    """A training task that supplies what a model with `conditions` is given."""
    return "noise" if conditions.noise_map else "squares" if conditions.mask_channel else "jpeg"


@pytest.mark.parametrize(("name", "options"), CASES)
def test_the_model_declares_the_conditions_its_options_give(name, options):
    torch.manual_seed(0)
    model = create_model(name, **_small(name), **options)
    conditions = Conditions.from_options(options)
    assert model.conditions == conditions == conditions_of(model)
    assert all(getattr(model.conditions, key) == value for key, value in options.items())  # each by its option name
    unshuffle = getattr(model, "unshuffle", 1)
    assert model.stem[0].in_channels == (3 + conditions.extra_channels) * unshuffle**2
    x = example_input(model, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3 + int(conditions.mask_input) + int(conditions.noise_map), 32, 32)
    if conditions.find_holes == "magenta":
        assert magenta_holes(x).float().mean().item() == pytest.approx(0.2, abs=0.05)  # painted in the key
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 32, 32)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_training_and_inference_run_the_model_on_the_same_input(name, options):
    """The trainer's batch (damaged, clean[, mask or σ]) through `step.model_output`, and each image with its
    mask and σ through `inference.restore_array`: the model sees the same tensor."""
    torch.manual_seed(0)
    model = create_model(name, **_small(name), **options).eval()
    conditions = training_conditions(options, create_task(_task_for(Conditions.from_options(options)), train=True))
    task = _task_for(conditions)
    model.info = {"model": name, "task": task}

    def stop(module, args):
        raise Seen(args[0].detach().clone())  # the input is all this test looks at: no need to run the model

    model.register_forward_pre_hook(stop)
    # The holes come for inference whenever the model knows of holes: a find_holes model is given them painted.
    loader = make_loader(load_source("builtin", size=32).split("val"), task, batch_size=2, train=False,
                         with_mask=conditions.mask_channel, with_noise_level=conditions.noise_map)
    damaged, clean, *given = next(iter(loader))
    given = given[0] if given else None
    with pytest.raises(Seen) as training:
        model_output(model, damaged, clean, given if conditions.mask_input else None, device=torch.device("cpu"),
                     precision="fp32", channels_last=False, noise_level=given if conditions.noise_map else None,
                     conditions=conditions)
    trained_on = training.value.args[0]
    assert trained_on.shape[1] == 3 + int(conditions.mask_input) + int(conditions.noise_map)
    for i in range(damaged.shape[0]):
        mask = given[i, 0] if conditions.mask_channel else None
        sigma = float(given[i]) if conditions.noise_map else None
        with pytest.raises(Seen) as inference:
            restore_array(model, damaged[i], RestoreOptions(sigma=sigma, tile=None, device="cpu", precision="fp32"),
                          mask=mask)
        assert torch.equal(inference.value.args[0], trained_on[i:i + 1])


@pytest.mark.parametrize("options", CONDITIONING)
def test_a_weights_record_gives_the_conditions_of_its_model(tmp_path, options):
    path = tmp_path / "m.safetensors"
    save_weights(create_model("pyramidal44", m=4, growth=2, **options), path, {"task": "squares"})
    loaded = load_weights(path)
    assert loaded.conditions == Conditions.from_options(loaded.info["options"]) == Conditions.from_options(options)


@pytest.mark.parametrize("options", [{"find_holes": "magenta", "mask_input": True}, {"find_holes": "green"},
                                     {"hole_fill": "smooth"}, {"hole_fill": "cubic", "mask_input": True},
                                     {"noise_map": True, "mask_input": True},
                                     {"noise_map": True, "find_holes": "magenta"}])
def test_an_impossible_mix_is_refused_in_the_same_words_with_or_without_a_model(options):
    with pytest.raises(OptionError) as described:
        Conditions.from_options(options)
    with pytest.raises(OptionError) as built:
        create_model("pyramidal44", m=4, growth=2, **options)
    assert str(built.value) == str(described.value)


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("options", CONDITIONING)
def test_training_and_evaluation_refuse_a_task_that_cannot_supply_the_model(task, options):
    conditions = Conditions.from_options(options)
    damage = create_task(task, train=True)
    supplies = ((not conditions.mask_input or damage.has_mask)
                and (conditions.find_holes == "none" or damage.hole_colour is not None)
                and (not conditions.noise_map or damage.has_noise_level))
    if supplies:
        assert training_conditions(options, damage) == conditions
        check_task(conditions, damage, "the model")
        return
    with pytest.raises(PyramidalError) as training:
        training_conditions(options, damage)
    with pytest.raises(PyramidalError) as evaluation:
        check_task(conditions, damage, "m.safetensors")
    assert str(evaluation.value) == f"m.safetensors: {training.value}"
    assert f"task {task} " in str(training.value)


def test_model_input_builds_each_kind_of_input():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    holes = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    holes[:, :, 2:4, 3:6] = True
    assert model_input(BLIND, images) is images
    assert model_input(BLIND, images, holes) is images  # no colour to paint them in: the image as it is
    painted = model_input(BLIND, images, holes, hole_colour=MAGENTA)
    assert torch.equal(painted, torch.where(holes, torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1), images))
    given = model_input(Conditions(mask_input=True), images, holes, hole_colour=MAGENTA)
    assert torch.equal(given[:, 3:], holes.float()) and torch.equal(given[:, :3], images * ~holes)
    sigma = model_input(Conditions(noise_map=True), images, sigma=torch.tensor([10.0, 20.0]))
    assert torch.allclose(sigma[:, 3], torch.tensor([10.0, 20.0]).view(2, 1, 1).expand(2, 8, 8) / 255)
    with pytest.raises(OptionError, match="mask_input"):
        model_input(Conditions(mask_input=True), images)
    with pytest.raises(OptionError, match="noise_map"):
        model_input(Conditions(noise_map=True), images, holes)
