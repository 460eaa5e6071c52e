"""Inpainting with a known mask: mask files and folders, `--mask auto`, exact known pixels, mask-conditioned
models, the strokes and inpaint tasks, `degrade --masks`, evaluation on equal terms, training with masks."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.checkpoint import load_weights, save_weights
from pyramidal.cli import main
from pyramidal.damage import MAGENTA, TASKS, create_task, eval_seed
from pyramidal.errors import PyramidalError
from pyramidal.hub import available_builtin_weights, builtin_weights_path
from pyramidal.inference import restore_image, restore_images
from pyramidal.inference.inputs import check_mask, magenta_mask, needs_mask, restore_input
from pyramidal.io import read_mask
from pyramidal.models import create_model
from pyramidal.models.blocks import fill_holes, magenta_holes, mask_conditioned_input, smooth_fill
from pyramidal.options import EVALUATION, RestoreOptions

from helpers import FAST

CPU = dict(device="cpu", precision="fp32")
# One tiny model of each family: the plain/pyramidal autoencoders and the dense pyramids.
FAMILIES = [("basic21", dict(channels=(4, 8, 8))), ("pyramidal51", dict(channels=(4, 4, 4, 4, 4, 4))),
            ("pyramidal44", dict(m=8, growth=4))]


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour image without magenta in it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 200, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    small[..., 1] = np.maximum(small[..., 1], 100)  # green enough that no pixel looks like the magenta key
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def box_mask(h: int = 48, w: int = 64) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[10:22, 20:41] = True
    mask[30:33, 5:60] = True  # a scratch
    return mask


def tiny(mask_input: bool = False, task: str = "squares"):
    torch.manual_seed(0)
    model = create_model("basic21", channels=(4, 8, 8), residual=True, mask_input=mask_input).eval()
    model.info = {"model": "basic21", "task": task}
    return model


@pytest.fixture
def blind_and_inpaint_weights(tmp_path):
    """(blind squares weights, mask-conditioned inpaint weights) as files."""
    blind, masked = tmp_path / "w" / "blind.safetensors", tmp_path / "w" / "masked.safetensors"
    save_weights(tiny(), blind, {"task": "squares"})
    save_weights(tiny(mask_input=True), masked, {"task": "inpaint"})
    return blind, masked


# ----------------------------------------------------------------------------------------------------------
# Reading masks


def test_read_mask_rules(tmp_path):
    holes = box_mask()
    gray = np.where(holes, 1, 0).astype(np.uint8)  # non-zero, even 1, is a hole
    Image.fromarray(gray, "L").save(tmp_path / "ones.png")
    assert np.array_equal(read_mask(tmp_path / "ones.png"), holes)
    colour = np.zeros((*holes.shape, 3), np.uint8)
    colour[holes] = (200, 30, 0)  # any colour on black
    Image.fromarray(colour).save(tmp_path / "red.png")
    assert np.array_equal(read_mask(tmp_path / "red.png"), holes)
    layer = np.zeros((*holes.shape, 4), np.uint8)
    layer[..., :3] = 255  # white everywhere: only the alpha channel says where the strokes are
    layer[holes, 3] = 255
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    assert np.array_equal(read_mask(tmp_path / "layer.png"), holes)
    Image.fromarray(np.where(holes, 255, 0).astype(np.uint8), "L").save(tmp_path / "lossy.jpg", quality=60)
    found = read_mask(tmp_path / "lossy.jpg")
    assert (found != holes).sum() < 0.01 * holes.size  # compression noise is not a hole
    assert found.sum() < 1.05 * holes.sum()


def test_check_mask_errors():
    with pytest.raises(PyramidalError, match=r"mask is 64×48 px but the image is 60×40 px"):
        check_mask(box_mask(), (40, 60))
    with pytest.raises(PyramidalError, match="marks no hole"):
        check_mask(np.zeros((4, 4)), (4, 4))
    with pytest.raises(PyramidalError, match="every pixel as a hole"):
        check_mask(np.full((4, 4), 255), (4, 4))
    assert check_mask(np.eye(4)[None], (4, 4)).dtype == torch.bool  # 1×H×W is fine


# ----------------------------------------------------------------------------------------------------------
# Known pixels, mask-conditioned models, blind models with a mask


@pytest.mark.parametrize("mask_input", [False, True])
@pytest.mark.parametrize("tiling", [dict(tile=0), dict(tile=32, overlap=8), dict(tile=32, overlap=8, ensemble=True)])
def test_known_pixels_come_back_exactly(mask_input, tiling):
    image, holes = photo(), box_mask()
    out = restore_image(tiny(mask_input), image, mask=holes, options=RestoreOptions(**tiling, **CPU))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[~holes], image[~holes])
    assert (out[holes] != image[holes]).any()
    batched = restore_images(tiny(mask_input), [image, image], masks=[holes, holes],
                             options=EVALUATION.replace(tile=0, **CPU))
    assert np.array_equal(batched[0][~holes], image[~holes]) and np.array_equal(batched[0], batched[1])


def test_one_call_library_function_takes_a_mask():
    import pyramidal

    image, holes = photo(), box_mask()
    out = pyramidal.restore(image, "inpaint", weights=tiny(mask_input=True), mask=holes, **CPU)
    assert np.array_equal(out[~holes], image[~holes]) and (out[holes] != image[holes]).any()
    painted = image.copy()
    painted[holes] = MAGENTA
    auto = pyramidal.restore(painted, "squares", weights=tiny(), mask="auto", **CPU)
    assert np.array_equal(auto[~holes], image[~holes])
    with pytest.raises(PyramidalError, match="no magenta"):
        pyramidal.restore(image, "squares", weights=tiny(), mask="auto", **CPU)


def test_every_byte_value_survives_outside_the_hole():
    values = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    image = np.stack([values, values[:, ::-1], values], axis=-1)
    holes = np.zeros(values.shape, bool)
    holes[1, 100:110] = True
    for precision in ("fp32", "bf16"):
        out = restore_image(tiny(), image, mask=holes,
                            options=RestoreOptions(device="cpu", precision=precision))
        assert np.array_equal(out[~holes], image[~holes])


@pytest.mark.parametrize(("name", "options"), FAMILIES)
def test_mask_input_models(name, options):
    model = create_model(name, mask_input=True, **options)
    assert model.stem[0].in_channels == 4 and needs_mask(model)
    assert create_model(name, **options).stem[0].in_channels == 3
    x = torch.rand(2, 3, 37, 45) * 2 - 1
    holes = torch.zeros(2, 1, 37, 45, dtype=torch.bool)
    holes[..., 10:20, 10:30] = True
    fed = mask_conditioned_input(x, holes)
    assert fed.shape == (2, 4, 37, 45)
    assert torch.equal(fed[:, 3:], holes.float()) and (fed[:, :3][holes.expand(-1, 3, -1, -1)] == 0).all()
    y = model(fed)
    assert y.shape == (2, 3, 37, 45) and torch.isfinite(y).all()
    y.square().mean().backward()
    grad = model.stem[0].weight.grad
    assert grad is not None and grad[:, 3].abs().sum() > 0  # the mask channel is learned from
    model.eval()
    with torch.no_grad():  # the mask changes the output: it is an input, not decoration
        assert not torch.equal(model(fed), model(mask_conditioned_input(x, holes.flip(-1))))


def test_mask_input_round_trips_through_the_weights_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(create_model("pyramidal44", m=8, growth=4, mask_input=True), path, {"task": "inpaint"})
    loaded = load_weights(path)
    assert loaded.info["options"]["mask_input"] is True
    assert loaded.conditions.mask_input and loaded.stem[0].in_channels == 4 and needs_mask(loaded)
    assert not needs_mask(load_weights(_blind(tmp_path)))


def _ramp_with_hole(h: int = 40, w: int = 56) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear colour ramp (a different slope per channel) and a mask with a square hole and a thin line."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ramp = torch.stack([0.6 * xx, 0.5 * yy, 0.3 * xx - 0.4 * yy])[None]
    hole = torch.zeros(1, 1, h, w)
    hole[..., 12:26, 20:34] = 1
    hole[..., 5, 3:50] = 1
    return ramp, hole


def test_smooth_fill_keeps_known_pixels_and_continues_smooth_images():
    ramp, hole = _ramp_with_hole()
    inside = hole.bool().expand_as(ramp)
    filled = smooth_fill(ramp * (1 - hole), hole)
    assert torch.equal(filled[~inside], ramp[~inside])  # known pixels exactly
    constant = torch.full_like(ramp, 0.25)
    assert torch.allclose(smooth_fill(constant * (1 - hole), hole), constant, atol=1e-5)
    # Membrane and thin plate both continue a linear ramp into the hole: far closer than the grey of the input.
    error = (filled - ramp)[inside].abs()
    assert error.max() < 0.05 and error.mean() < 0.02, (error.max(), error.mean())
    assert error.mean() < 0.1 * ramp[inside].abs().mean()
    # Whatever colour the holes were painted, the fill is the same; no known pixel at all gives zeros.
    assert torch.equal(smooth_fill(torch.where(inside, torch.ones_like(ramp), ramp), hole), filled)
    assert torch.equal(smooth_fill(ramp, torch.ones_like(hole)), torch.zeros_like(ramp))
    # Any shape, one-pixel rows and columns too: a hole takes the known pixels' values, never 0 for lack of a level.
    for h, w in ((1, 9), (7, 1), (3, 3), (33, 65)):
        line = torch.full((1, 3, h, w), 0.5)
        holes = torch.zeros(1, 1, h, w)
        holes[..., h // 2, w // 2] = 1
        assert torch.allclose(smooth_fill(line * (1 - holes), holes), line), (h, w)
    # Under bf16 autocast the fill runs in float32 and returns the input's dtype.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(smooth_fill(ramp, hole), filled)


def test_hole_fill_option_validated_stored_and_starts_as_the_fill(tmp_path):
    with pytest.raises(ValueError, match="needs mask_input=true"):
        create_model("pyramidal44", m=8, growth=4, hole_fill="smooth")
    with pytest.raises(ValueError, match="choose one of grey, smooth"):
        create_model("basic21", channels=(4, 8, 8), mask_input=True, hole_fill="mean")
    ramp, hole = _ramp_with_hole()
    fed = mask_conditioned_input(ramp, hole.bool())
    for name, options in FAMILIES:
        model = create_model(name, mask_input=True, hole_fill="smooth", residual=True, **options).eval()
        with torch.no_grad():  # a residual model starts exactly as the fill: its output conv is zero
            assert torch.allclose(model(fed), fill_holes(fed)[:, :3].clamp(-1, 1), atol=1e-6), name
    path = tmp_path / "fill.safetensors"
    save_weights(create_model("pyramidal44", m=8, growth=4, mask_input=True, hole_fill="smooth"), path,
                 {"task": "inpaint"})
    loaded = load_weights(path)
    assert loaded.info["options"]["hole_fill"] == "smooth" and loaded.conditions.hole_fill == "smooth"
    assert create_model("pyramidal44", m=8, growth=4, mask_input=True).conditions.hole_fill == "grey"


def _painted(h: int = 37, w: int = 45, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(B×3×H×W images in [-1, 1] with magenta holes, the B×1×H×W bool holes), no natural pixel near magenta."""
    torch.manual_seed(1)
    images = torch.rand(batch, 3, h, w) * 1.2 - 0.6
    holes = torch.zeros(batch, 1, h, w, dtype=torch.bool)
    holes[0, :, 5:15, 8:30] = True
    holes[1, :, 20:23, 2:40] = True
    key = torch.tensor(MAGENTA).float().view(1, 3, 1, 1) / 127.5 - 1
    return torch.where(holes, key, images), holes


@pytest.mark.parametrize(("name", "options"), FAMILIES)
def test_find_holes_models_find_fill_and_keep_known_pixels(name, options):
    painted, holes = _painted()
    assert torch.equal(magenta_holes(painted), holes)
    model = create_model(name, find_holes="magenta", hole_fill="smooth", residual=True, **options)
    assert model.stem[0].in_channels == 4 and not needs_mask(model)  # blind: it is given the image alone
    out = model(painted)
    keep = ~holes.expand_as(painted)
    assert torch.equal(out[keep], painted[keep])  # every pixel it found no hole in, exactly
    assert (out[~keep] - painted[~keep]).abs().mean() > 0.5  # the magenta is filled
    model.eval()
    with torch.no_grad():  # it starts as the smooth fill of the holes it found
        assert torch.allclose(model(painted), fill_holes(mask_conditioned_input(painted, holes))[:, :3], atol=1e-6)
    model.train()
    torch.nn.init.normal_(model.output.conv.weight, std=0.05)  # past the zeroed start, gradients reach the stem
    out = model(painted)
    (out - painted.flip(-1)).square().mean().backward()
    assert model.stem[0].weight.grad[:, 3].abs().sum() > 0  # the found mask is an input channel it learns from
    with pytest.raises(ValueError, match="choose one"):
        create_model(name, find_holes="magenta", mask_input=True, **options)
    with pytest.raises(ValueError, match="choose one of none, magenta"):
        create_model(name, find_holes="green", **options)


def test_find_holes_model_is_the_mask_conditioned_model_with_its_mask_found(tmp_path):
    """The same weights: blind on the painted image, or mask-conditioned and given the mask, restore the same."""
    torch.manual_seed(0)
    given = create_model("pyramidal44", m=8, growth=4, mask_input=True, hole_fill="smooth", residual=True).eval()
    for p in given.parameters():  # any weights, not only the zeroed output the fill starts from
        p.data.normal_(0, 0.05)
    found = create_model("pyramidal44", m=8, growth=4, find_holes="magenta", hole_fill="smooth", residual=True)
    found.load_state_dict(given.state_dict())
    painted, holes = _painted()
    with torch.no_grad():
        expected = torch.where(holes, given(mask_conditioned_input(painted, holes)), painted)
        assert torch.allclose(found.eval()(painted), expected, atol=1e-6)
    path = tmp_path / "found.safetensors"
    save_weights(found, path, {"task": "squares"})
    loaded = load_weights(path)
    assert loaded.conditions.find_holes == "magenta" and loaded.info["options"]["find_holes"] == "magenta"
    # restore: blind without a mask; with one, the holes are painted in the key and found again.
    image = photo()
    rgb = image.copy()
    rgb[box_mask()] = MAGENTA
    blind = restore_image(loaded, rgb, options=RestoreOptions(**CPU))
    assert np.array_equal(blind[~box_mask()], image[~box_mask()])
    assert np.array_equal(restore_image(loaded, image, mask=box_mask(), options=RestoreOptions(**CPU)), blind)


def test_magenta_holes_decides_exact_or_smeared_per_image():
    image = torch.from_numpy(photo(96, 128, 0)).permute(2, 0, 1)[None].contiguous()
    damaged, holes = create_task("strokes").apply(image, seeds=[eval_seed(0)])
    rgb = damaged[0].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=75)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    batch = torch.from_numpy(np.stack([rgb, decoded])).permute(0, 3, 1, 2).float() / 127.5 - 1
    found = magenta_holes(batch)
    assert torch.equal(found[0, 0], holes[0, 0])  # lossless: exactly the painted pixels
    assert np.array_equal(found[1, 0].numpy(), magenta_mask(decoded))  # as `--mask auto` finds them


def test_training_a_find_holes_model_needs_a_keyed_task(tmp_path):
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer, train

    base = dict(model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4, patches_per_epoch=8,
                val_images=4, log_images=2, precision="fp32", quiet=True, progress=False, out=str(tmp_path),
                optimizer="adamw")
    options = {"find_holes": "magenta", "hole_fill": "smooth"}
    run = train(TrainConfig(task="grid", model_options=options, steps=2, **base))
    model = load_weights(run / "best.safetensors")
    assert model.conditions.find_holes == "magenta" and not needs_mask(model)
    for task in ("noise", "text"):
        with pytest.raises(PyramidalError, match=f"task {task} paints no holes in the colour key"):
            Trainer(TrainConfig(task=task, model_options=options, steps=1, **base))


def _blind(tmp_path):
    path = tmp_path / "blind.safetensors"
    save_weights(create_model("pyramidal44", m=8, growth=4), path, {"task": "noise"})
    return path


def test_mask_conditioned_model_refuses_to_run_without_a_mask(tmp_path, blind_and_inpaint_weights, capsys):
    image = photo()
    with pytest.raises(PyramidalError, match="mask-conditioned"):
        restore_image(tiny(mask_input=True), image, options=RestoreOptions(**CPU))
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["restore", "--weights", str(blind_and_inpaint_weights[1]), str(tmp_path / "a.png"), "-o", str(out), *FAST]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask-conditioned" in err[0] and "--mask" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_blind_model_sees_holes_painted_as_its_task_painted_them():
    image = torch.from_numpy(photo()).permute(2, 0, 1).float() / 127.5 - 1
    holes = torch.from_numpy(box_mask())
    magenta = torch.tensor(MAGENTA).float().view(3, 1) / 127.5 - 1
    fed = restore_input(tiny(task="squares"), image, holes)
    assert torch.equal(fed[:, holes], magenta.expand(3, int(holes.sum())))
    assert torch.equal(fed[:, ~holes], image[:, ~holes])
    assert torch.equal(restore_input(tiny(task="text"), image, holes), image)  # text keeps its own pixels
    assert restore_input(tiny(mask_input=True), image, holes).shape == (4, *holes.shape)


# ----------------------------------------------------------------------------------------------------------
# restore --mask: one file, a folder, auto, bad masks


def _inputs(tmp_path, names=("a", "b", "c")):
    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate(names):
        Image.fromarray(photo(seed=k)).save(src / f"{name}.png")
    return src


def test_restore_one_mask_file_keeps_known_pixels(tmp_path, blind_and_inpaint_weights):
    src = _inputs(tmp_path, ["a"])
    holes = box_mask()
    Image.fromarray(np.where(holes, 255, 0).astype(np.uint8)).save(tmp_path / "m.png")
    for w in blind_and_inpaint_weights:
        out = tmp_path / f"out-{w.stem}"
        assert main(["restore", "--weights", str(w), str(src / "a.png"), "--mask", str(tmp_path / "m.png"),
                     "-o", str(out), "--tile", "32", "--overlap", "8", *FAST]) == 0
        result = np.asarray(Image.open(out / "a.png"))
        original = np.asarray(Image.open(src / "a.png"))
        assert np.array_equal(result[~holes], original[~holes])
        assert (result[holes] != original[holes]).any()


def test_restore_mask_folder_matches_stems_and_reports_each_bad_mask(tmp_path, blind_and_inpaint_weights, capsys):
    src = _inputs(tmp_path, ["good", "jpegmask", "missing", "small", "empty", "full", "broken"])
    masks = tmp_path / "masks"
    masks.mkdir()
    holes = np.where(box_mask(), 255, 0).astype(np.uint8)
    Image.fromarray(holes).save(masks / "good.png")
    Image.fromarray(holes).save(masks / "jpegmask.jpg", quality=90)  # any image suffix
    Image.fromarray(holes[:20, :20]).save(masks / "small.png")
    Image.fromarray(np.zeros_like(holes)).save(masks / "empty.png")
    Image.fromarray(np.full_like(holes, 255)).save(masks / "full.png")
    (masks / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.png").write_bytes(b"an earlier result")  # a failed input never loses an existing output
    code = main(["restore", "--weights", str(blind_and_inpaint_weights[1]), str(src), "--mask", str(masks), "-o", str(out),
                 "--overwrite", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "jpegmask.png", "small.png"]
    assert (out / "small.png").read_bytes() == b"an earlier result"
    assert len(err) == 5, err
    by_file = {name: next(line for line in err if f"{name}.png:" in line)
               for name in ("missing", "small", "empty", "full", "broken")}
    assert "no mask named missing.*" in by_file["missing"]
    assert "small.png" in by_file["small"] and "20×20 px but the image is 64×48 px" in by_file["small"]
    assert str(masks / "small.png") in by_file["small"] and str(src / "small.png") in by_file["small"]
    assert "marks no hole" in by_file["empty"]
    assert "every pixel as a hole" in by_file["full"]
    assert "not a readable image" in by_file["broken"] and str(masks / "broken.png") in by_file["broken"]


def test_restore_mask_arguments_refused_before_any_work(tmp_path, blind_and_inpaint_weights, capsys):
    src = _inputs(tmp_path, ["a", "b"])
    Image.fromarray(np.where(box_mask(), 255, 0).astype(np.uint8)).save(tmp_path / "m.png")
    out = tmp_path / "out"
    assert main(["restore", "--weights", str(blind_and_inpaint_weights[0]), str(src), "--mask", str(tmp_path / "m.png"),
                 "-o", str(out), *FAST]) != 0
    assert "one mask for 2 images" in capsys.readouterr().err
    assert main(["restore", "--weights", str(blind_and_inpaint_weights[0]), str(src), "--mask", str(tmp_path / "nothing"),
                 "-o", str(out), *FAST]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_magenta_mask_tolerates_jpeg():
    found_any = False
    for seed in range(3):
        image = torch.from_numpy(photo(96, 128, seed)).permute(2, 0, 1)[None].contiguous()
        damaged, holes = create_task("strokes").apply(image, seeds=[eval_seed(seed)])
        rgb, holes = damaged[0].permute(1, 2, 0).numpy(), holes[0, 0].numpy()
        assert np.array_equal(magenta_mask(rgb), holes)  # lossless: exactly the painted pixels
        for quality in (60, 90):
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
            decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            found = magenta_mask(decoded)
            assert (holes & ~found).sum() <= 0.005 * holes.sum()  # the hole, all but a few blended pixels
            padded = np.pad(holes, 3)
            near = np.zeros_like(holes)
            for dy in range(7):
                for dx in range(7):
                    near |= padded[dy:dy + holes.shape[0], dx:dx + holes.shape[1]]
            assert not (found & ~near).any()  # nothing more than 3 px from it
            found_any = True
    assert found_any and not magenta_mask(photo(seed=11)).any()


def test_restore_mask_auto_on_a_jpeg(tmp_path, blind_and_inpaint_weights, capsys):
    image = torch.from_numpy(photo()).permute(2, 0, 1)[None].contiguous()
    damaged = create_task("squares")(image, seeds=[1])[0].permute(1, 2, 0).numpy()
    Image.fromarray(damaged).save(tmp_path / "holes.jpg", quality=85)
    Image.fromarray(photo(seed=5)).save(tmp_path / "none.png")
    out = tmp_path / "out"
    code = main(["restore", "--weights", str(blind_and_inpaint_weights[1]), str(tmp_path / "holes.jpg"), str(tmp_path / "none.png"),
                 "--mask", "auto", "-o", str(out), *FAST])
    err = capsys.readouterr().err
    assert code != 0 and "none.png: --mask auto: no magenta (255, 0, 255) pixels found" in err
    decoded = np.asarray(Image.open(tmp_path / "holes.jpg").convert("RGB"))
    result = np.asarray(Image.open(out / "holes.png"))
    found = magenta_mask(decoded)
    assert np.array_equal(result[~found], decoded[~found])
    assert magenta_mask(result).sum() < 0.05 * found.sum()  # the magenta is gone


def test_builtin_inpaint_weights_or_a_clear_hint(tmp_path, capsys):
    if "inpaint" in available_builtin_weights():
        assert needs_mask(load_weights(builtin_weights_path("inpaint")))
        return
    with pytest.raises(PyramidalError, match=r"no built-in weights for inpaint .*train them with "
                                             r"`pyramidal.recipe.run_recipe\('inpaint'\)`"):
        builtin_weights_path("inpaint")


# ----------------------------------------------------------------------------------------------------------
# Tasks: text's mask, strokes, inpaint


def _images(b: int = 8, h: int = 64, w: int = 64) -> torch.Tensor:
    x = torch.randint(0, 256, (b, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x[:, 1] = x[:, 1].clamp(min=1)  # nothing magenta to start with
    return x


@pytest.mark.parametrize("name", ["squares", "block", "grid", "text", "strokes", "inpaint"])
def test_hole_tasks_return_the_mask_of_what_they_changed(name):
    x = _images()
    damaged, holes = create_task(name, train=True).apply(x, seeds=list(range(8)))
    assert TASKS.get(name).has_mask and holes.shape == (8, 1, 64, 64) and holes.dtype == torch.bool
    changed = (damaged != x).any(dim=1, keepdim=True)
    assert not (changed & ~holes).any()  # every changed pixel is in the mask
    assert holes.flatten(1).any(1).all()
    # Text keeps the colours it draws; the others paint magenta, which blind models look for.
    assert TASKS.get(name).hole_colour == (None if name == "text" else MAGENTA)


def test_strokes_are_deterministic_and_cover_a_sensible_part():
    task = create_task("strokes")
    x = _images(4)
    a, ma = task.apply(x, seeds=[7, 8, 9, 10])
    b, mb = create_task("strokes", train=True).apply(x, seeds=[7, 8, 9, 10])
    assert torch.equal(a, b) and torch.equal(ma, mb)  # one distribution, seeded per image
    assert torch.equal(task(x), task(x))  # evaluation: fixed seeds per image
    single, _ = task.apply(x[2:3], seeds=[9])
    assert torch.equal(single[0], a[2])
    coverage = np.array([task.stroke_mask(64, 64, s).mean() for s in range(200)])
    assert 0.005 < coverage.min() and coverage.max() <= task.max_coverage + 1e-9
    assert 0.07 < coverage.mean() < 0.25
    assert len({task.stroke_mask(64, 64, s).tobytes() for s in range(20)}) == 20
    big = np.array([task.stroke_mask(256, 256, s).mean() for s in range(20)])
    assert abs(big.mean() - coverage[:20].mean()) < 0.08  # widths and lengths scale with the image


def test_inpaint_draws_each_hole_task():
    task = create_task("inpaint", train=True)
    used = {task.tasks[task.choose(s)[0]].name for s in range(200)}
    assert used == {"squares", "block", "grid", "text", "strokes"}
    with pytest.raises(ValueError, match="noise.*no holes"):
        create_task("inpaint", tasks="squares,noise")
    only = create_task("inpaint", tasks="strokes")
    x = _images(3)
    assert torch.equal(only.apply(x, seeds=[1, 2, 3])[1].any(), torch.tensor(True))


# ----------------------------------------------------------------------------------------------------------
# degrade --masks


def test_degrade_masks_then_restore_with_them(tmp_path, blind_and_inpaint_weights, capsys):
    src = _inputs(tmp_path, ["a", "b"])
    out, masks = tmp_path / "damaged", tmp_path / "masks"
    assert main(["degrade", "--task", "strokes", str(src), "-o", str(out), "--masks", str(masks)]) == 0
    for name in ("a.png", "b.png"):
        with Image.open(masks / name) as im:
            assert im.mode == "L"
            mask = np.asarray(im)
        assert set(np.unique(mask)) == {0, 255}
        damaged = np.asarray(Image.open(out / name))
        assert np.array_equal(mask == 255, magenta_mask(damaged))
    restored = tmp_path / "restored"
    assert main(["restore", "--weights", str(blind_and_inpaint_weights[1]), str(out), "--mask", str(masks), "-o", str(restored),
                 *FAST]) == 0
    assert sorted(p.name for p in restored.iterdir()) == ["a.png", "b.png"]
    assert main(["degrade", "--task", "noise", str(src), "-o", str(tmp_path / "n"), "--masks", str(masks)]) != 0
    assert "task noise makes no holes" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# evaluate on equal terms


@pytest.mark.filterwarnings("ignore:.*was trained for task 'inpaint', not 'noise'")
def test_evaluate_gives_the_mask_and_scores_the_hole(tmp_path):
    from pyramidal.evaluate import evaluate, format_markdown, format_table
    from pyramidal.metrics import hole_scores

    path = tmp_path / "m.safetensors"
    save_weights(tiny(mask_input=True), path, {"task": "inpaint"})
    result = evaluate(str(path), "strokes", crop=32, crops=2, limit=3, baselines="fast", keep_images=True,
                      options=EVALUATION.replace(**CPU))
    rows = {r["method"]: r for r in result["settings"][0]["rows"]}
    model_rows = [r for r in rows.values() if r["kind"] == "model"]
    assert len(model_rows) == 1 and model_rows[0]["method"].endswith("(mask given)")
    assert "scikit-image biharmonic inpainting (true mask)" in rows
    images = result["images"][0]
    clean = images["clean"]
    masks = [create_task("strokes").apply(torch.from_numpy(c).permute(2, 0, 1)[None].contiguous(),
                                          seeds=[eval_seed(i)])[1][0, 0].numpy() for i, c in enumerate(clean)]
    restored = images[model_rows[0]["method"]]
    for c, r, m in zip(clean, restored, masks):
        assert np.array_equal(r[~m], c[~m])  # the model row is composited with the true mask
    for row in rows.values():
        assert row["psnr_hole"] is not None and row["psnr_hole"] < row["psnr"]
        assert 0 < row["ssim_hole"] <= 1
    bih = rows["scikit-image biharmonic inpainting (true mask)"]
    direct = [hole_scores(c, r, m)[0] for c, r, m in zip(clean, images[bih["method"]], masks)]
    assert bih["psnr_hole"] == pytest.approx(float(np.mean(direct)))
    first, hole = images[bih["method"]][0], masks[0]
    mse = ((clean[0][hole].astype(float) - first[hole].astype(float)) ** 2).mean()
    assert direct[0] == pytest.approx(10 * math.log10(255**2 / mse))
    assert "hole dB" in format_table(result) and "hole PSNR (dB)" in format_markdown(result)
    with pytest.raises(PyramidalError, match="mask-conditioned.*no holes"):
        evaluate(str(path), "noise", crop=32, limit=1, baselines="none", options=EVALUATION.replace(**CPU))


def test_hole_tasks_name_the_three_inpainting_baselines():
    from pyramidal.baselines import BASELINES

    assert "biharmonic" in BASELINES.names()
    for name in ("squares", "block", "grid", "strokes", "inpaint", "text"):
        assert set(TASKS.get(name).baselines) == {"opencv-telea", "opencv-ns", "biharmonic"}
    assert TASKS.get("strokes").eval_crop == 64 and TASKS.get("strokes").eval_crops == 16


# ----------------------------------------------------------------------------------------------------------
# Training with masks


def test_loader_gives_masks_only_when_asked():
    from pyramidal.data.loader import make_loader
    from pyramidal.data.sources import load_source

    ds = load_source("builtin", size=32).split("val")
    damaged, clean, holes = next(iter(make_loader(ds, "strokes", batch_size=2, train=False, with_mask=True)))
    assert holes.shape == (2, 1, 32, 32) and holes.dtype == torch.bool and holes.any()
    painted = damaged.permute(0, 2, 3, 1)[holes[:, 0]]  # N×3: the colour of every hole pixel
    assert torch.equal(painted, torch.tensor([[1.0, -1.0, 1.0]]).expand_as(painted))
    assert len(next(iter(make_loader(ds, "strokes", batch_size=2, train=False)))) == 2
    with pytest.raises(ValueError, match="no holes"):
        make_loader(ds, "noise", batch_size=2, with_mask=True)


def test_train_step_scores_only_the_holes():
    from pyramidal.step import train_step

    model = create_model("basic21", channels=(4, 8, 8), mask_input=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    clean = torch.rand(2, 3, 16, 16) * 2 - 1
    holes = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    holes[..., 4:8, 4:8] = True
    damaged = torch.where(holes, torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1), clean)
    loss, output = train_step(model, optimizer, damaged, clean, mask=holes, conditions=model.conditions,
                              device=torch.device("cpu"), precision="fp32")
    keep = ~holes.expand(-1, 3, -1, -1)
    assert torch.equal(output[keep], clean[keep])
    assert loss.item() == pytest.approx(((output - clean) ** 2).mean().item())
    assert model.stem[0].weight.grad[:, 3].abs().sum() > 0


def test_training_a_mask_conditioned_model(tmp_path):
    from pyramidal.config import TrainConfig
    from pyramidal.train import Trainer, train

    base = dict(model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4, patches_per_epoch=8,
                val_images=4, log_images=2, precision="fp32", quiet=True, progress=False, out=str(tmp_path))
    run = train(TrainConfig(task="inpaint", model_options={"mask_input": True}, steps=3, **base))
    model = load_weights(run / "best.safetensors")
    assert needs_mask(model) and model.info["task"] == "inpaint"
    with pytest.raises(PyramidalError, match="task noise makes no holes"):
        Trainer(TrainConfig(task="noise", model_options={"mask_input": True}, steps=1, **base))


def test_smooth_fill_from_scratch_refuses_adam_with_l2_decay(tmp_path, capsys):
    base = ["train", "--task", "inpaint", "--model", "pyramidal44", "--m", "8", "--growth", "4",
            "--model-option", "mask_input=true", "--model-option", "hole_fill=smooth", "--steps", "1", "--size", "32",
            "--batch-size", "2", "--data", "builtin", "--val-images", "2", "--out", str(tmp_path / "runs"),
            "--no-progress", "--log-images", "0", *FAST]
    assert main(base + ["--optimizer", "adam", "--weight-decay", "1e-4"]) != 0
    err = capsys.readouterr().err
    assert "hole_fill=smooth" in err and "--optimizer adamw" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert main(base + ["--optimizer", "adamw"]) == 0


def test_onnx_export_refuses_a_mask_conditioned_model(tmp_path):
    from pyramidal.export import export_onnx

    with pytest.raises(PyramidalError, match="mask-conditioned"):
        export_onnx(tiny(mask_input=True), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(PyramidalError, match="find_holes=magenta, hole_fill=smooth"):
        export_onnx(create_model("pyramidal44", m=8, growth=4, find_holes="magenta", hole_fill="smooth"),
                    tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
