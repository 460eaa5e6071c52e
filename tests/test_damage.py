"""Damage tasks: shapes, determinism, and the exact protocols of docs/damage-and-data.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyramidal.damage import (
    TASKS,
    BlurTask,
    NoiseTask,
    PixelateTask,
    _rng,
    create_task,
    derive_seed,
    eval_seed,
    pixelate_small,
)

ALL = ["blur", "block", "camera", "grid", "gray", "inpaint", "jpeg", "mixed", "noise", "pixelate", "squares", "strokes",
       "text"]
RANDOM = ["camera", "inpaint", "jpeg", "mixed", "noise", "squares", "strokes", "text"]  # differ between seeds even in eval mode
MASKED = ["squares", "block", "grid", "inpaint", "strokes", "text"]
MAGENTA = torch.tensor([255, 0, 255], dtype=torch.uint8).view(3, 1, 1)


def images(b=4, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    # No pixel is magenta to start with, so painted pixels are recognisable.
    x[:, 1] = x[:, 1].clamp(min=1)
    return x


def test_registry_names():
    assert TASKS.names() == sorted(ALL)
    with pytest.raises(ValueError, match="noise"):
        create_task("nosie")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False])
def test_shape_dtype_and_input_untouched(name, train):
    x = images()
    before = x.clone()
    d, mask = create_task(name, train=train).apply(x, seeds=[1, 2, 3, 4])
    assert d.shape == x.shape and d.dtype == torch.uint8
    assert torch.equal(x, before)
    if name in MASKED:
        assert mask.shape == (4, 1, 64, 64) and mask.dtype == torch.bool and mask.any()
    else:
        assert mask is None
    assert not torch.equal(d, x)  # every task actually damages a 64×64 image


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False])
def test_deterministic_and_per_image(name, train):
    x = images()
    t = create_task(name, train=train)
    a = t(x, seeds=[5, 6, 7, 8])
    assert torch.equal(a, t(x, seeds=[5, 6, 7, 8]))
    # Image i's damage depends only on (options, seeds[i], image i): not on batch position or neighbours.
    assert torch.equal(a[2:3], t(x[2:3], seeds=[7]))
    assert torch.equal(a[[3, 0]], t(x[[3, 0]], seeds=[8, 5]))
    # A rebuilt task gives the same pixels.
    t2 = create_task(t.name, train=t.train, **t.options)
    assert torch.equal(a, t2(x, seeds=[5, 6, 7, 8]))
    # A torch.Generator drives the draws reproducibly too.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(t(x, generator=g1), t(x, generator=g2))


@pytest.mark.parametrize("name", RANDOM + ["block", "grid"])
def test_seeds_matter_in_training(name):
    x = images(b=1, h=128, w=128)
    t = create_task(name, train=True)
    outs = {t(x, seeds=[s]).numpy().tobytes() for s in range(6)}
    assert len(outs) > 1


@pytest.mark.parametrize("name", ["blur", "gray", "pixelate", "block", "grid"])
def test_eval_mode_is_seed_independent_for_fixed_tasks(name):
    x = images(b=1)
    t = create_task(name, train=False)
    assert torch.equal(t(x, seeds=[1]), t(x, seeds=[2]))


def test_eval_defaults_use_eval_seed():
    x = images()
    t = create_task("squares")
    assert torch.equal(t(x), t(x, seeds=[eval_seed(i) for i in range(4)]))
    assert eval_seed(3) == eval_seed(3) != eval_seed(4)
    assert eval_seed(3, base=1) != eval_seed(3)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


def test_seed_errors():
    t = create_task("noise")
    with pytest.raises(ValueError):
        t(images(), seeds=[1, 2])
    with pytest.raises(ValueError):
        t(images(), seeds=[1, 2, 3, 4], generator=torch.Generator())
    with pytest.raises(TypeError):
        t(images().float())
    assert t(images(), seeds=[-1, -2, 3, 4]).shape == (4, 3, 64, 64)


def test_single_image_and_empty_batch():
    x = images(b=1)[0]
    d, mask = create_task("block").apply(x)
    assert d.shape == x.shape and mask.shape == (1, 64, 64)
    empty = images(b=0)
    for name in ALL:
        assert create_task(name).apply(empty)[0].shape == empty.shape


def test_options_and_eval_settings():
    assert create_task("noise").eval_settings() == [{"sigma": 15}, {"sigma": 25}, {"sigma": 50}, {"sigma": 125}]
    assert create_task("jpeg").eval_settings() == [{"quality": 10}, {"quality": 5}]
    assert create_task("blur").eval_settings() == [{}]
    assert create_task("noise", train=False).sigma == 50
    assert create_task("noise", train=True).sigma is None
    assert create_task("noise", train=True, sigma=30).options == {"sigma": 30.0}
    assert create_task("jpeg", train=False).quality == 10
    assert create_task("pixelate").factor == 8
    assert create_task("mixed", tasks="noise, blur").options == {"tasks": "noise,blur"}
    for bad in [dict(name="noise", sigma=-1), dict(name="jpeg", quality=0), dict(name="pixelate", factor=0),
                dict(name="blur", sigma=3), dict(name="mixed", tasks="noise,nope")]:
        with pytest.raises(ValueError):
            create_task(**bad)


def _noise_residual_std(sigma, train):
    x = torch.full((1, 3, 512, 512), 128, dtype=torch.uint8)  # mid grey: clipping is negligible at σ <= 25
    d = create_task("noise", train=train, sigma=sigma)(x, seeds=[11])
    return (d.float() - 128).std().item()


@pytest.mark.parametrize("sigma", [5.0, 15.0, 25.0])
@pytest.mark.parametrize("train", [True, False])
def test_noise_sigma_within_2_percent(sigma, train):
    assert abs(_noise_residual_std(sigma, train) - sigma) <= 0.02 * sigma


def test_noise_eval_default_is_50_and_training_draws_sigma():
    x = torch.full((1, 3, 64, 64), 128, dtype=torch.uint8)
    assert torch.equal(create_task("noise")(x, seeds=[1]), create_task("noise", sigma=50)(x, seeds=[1]))
    # Training: σ ~ U[0, 130] per image (measured on images where σ is small enough not to clip much).
    t = NoiseTask(train=True)
    stds = [(t(x, seeds=[s]).float() - 128).std().item() for s in range(40)]
    assert min(stds) < 40 and max(stds) > 70 and max(stds) <= 131
    assert len({round(s, 3) for s in stds}) == 40


def test_pixelate_constant_on_cells():
    x = images(b=2, h=64, w=96)
    d = create_task("pixelate")(x)
    cells = d.view(2, 3, 8, 8, 12, 8)  # (b, c, rows, 8, cols, 8)
    assert (cells == cells[:, :, :, :1, :, :1]).all()
    # The cell value is the bicubic-antialiased down-scaled image.
    small = pixelate_small(x)
    assert small.shape == (2, 3, 8, 12)
    assert torch.equal(cells[:, :, :, 0, :, 0], small)
    assert PixelateTask(factor=4).pixelate_small(x).shape[2:] == (16, 24)


def test_pixelate_smaller_than_factor():
    x = images(b=1, h=5, w=20)
    d = create_task("pixelate")(x)
    assert d.shape == x.shape
    # A side shorter than the factor becomes one cell: each of the 2 column cells is constant.
    assert (d[..., :10] == d[..., :1, :1]).all() and (d[..., 10:] == d[..., :1, 10:11]).all()


def test_blur_kernel_and_borders():
    k = BlurTask().kernel()
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-9
    assert abs(BlurTask.sigma - 2.6) < 1e-12
    # Separable Gaussian with σ = 2.6: ratio of centre to neighbour taps.
    assert np.isclose(k[7, 7] / k[7, 8], np.exp(1 / (2 * 2.6**2)))
    flat = torch.full((1, 3, 20, 30), 77, dtype=torch.uint8)
    assert torch.equal(create_task("blur")(flat), flat)  # replicated borders: no dark frame
    # Against a direct 2-D convolution with replicate padding.
    x = images(b=1, h=23, w=17)
    ref = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x.double(), (7, 7, 7, 7), mode="replicate"),
        torch.from_numpy(k).view(1, 1, 15, 15).expand(3, 1, 15, 15),
        groups=3,
    )
    assert (create_task("blur")(x).double() - ref.round()).abs().max() <= 1


def test_jpeg_is_the_real_codec():
    import io

    from PIL import Image

    x = images(b=1, h=40, w=56)
    buf = io.BytesIO()
    Image.fromarray(x[0].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=10)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    d = create_task("jpeg", quality=10)(x)
    assert np.array_equal(d[0].permute(1, 2, 0).numpy(), ref)
    assert torch.equal(create_task("jpeg")(x), d)  # eval default quality 10


def test_jpeg_training_quality_range():
    from pyramidal.damage import JpegTask

    t = JpegTask(train=True)
    x = images(b=1, h=32, w=32)
    outs = {t(x, seeds=[s]).numpy().tobytes() for s in range(12)}
    assert len(outs) > 3
    refs = {create_task("jpeg", quality=q)(x).numpy().tobytes() for q in range(5, 51)}
    assert outs <= refs  # every training output is some quality in [5, 50]


def test_block_exact_centred_half_square():
    for h, w in [(64, 64), (65, 70), (128, 96)]:
        x = images(b=2, h=h, w=w)
        d, mask = create_task("block", train=False).apply(x, seeds=[1, 2])
        side = min(h, w) // 2
        top, left = (h - side) // 2, (w - side) // 2
        expected = torch.zeros(h, w, dtype=torch.bool)
        expected[top : top + side, left : left + side] = True
        assert torch.equal(mask[:, 0], expected.expand(2, h, w))
        assert (d[:, :, expected] == MAGENTA.view(1, 3, 1)).all()
        assert torch.equal(d[:, :, ~expected], x[:, :, ~expected])
    # 64 px: rows and columns 16..47.
    m = create_task("block").apply(images(b=1))[1][0, 0]
    assert m[16:48, 16:48].all() and m.sum() == 32 * 32


def test_block_training_jitter_at_most_2px():
    x = images(b=64)
    _, mask = create_task("block", train=True).apply(x, seeds=list(range(64)))
    tops = mask[:, 0].any(dim=2).float().argmax(dim=1)
    lefts = mask[:, 0].any(dim=1).float().argmax(dim=1)
    assert set(tops.tolist()) <= set(range(14, 19)) and set(lefts.tolist()) <= set(range(14, 19))
    assert len(set(tops.tolist())) > 1
    assert (mask.sum(dim=(1, 2, 3)) == 32 * 32).all()


def test_grid_layout_at_64():
    _, mask = create_task("grid", train=False).apply(images(b=1))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    for a in (12, 26, 40):
        for b in (12, 26, 40):
            expected[a : a + 12, b : b + 12] = True
    assert torch.equal(mask[0, 0], expected)


@pytest.mark.parametrize("train", [True, False])
def test_squares_only_magenta_inside_mask(train):
    x = images(b=16)
    d, mask = create_task("squares", train=train).apply(x, seeds=list(range(16)))
    m = mask[:, 0]
    changed = (d != x).any(dim=1)
    assert not (changed & ~m).any()  # nothing outside the mask changes
    assert (d.permute(0, 2, 3, 1)[m] == torch.tensor([255, 0, 255], dtype=torch.uint8)).all()
    area = m.sum(dim=(1, 2))
    assert (area >= 4 * 4).all() and (area <= 4 * 14 * 14).all()


def test_squares_sides_and_count():
    t = create_task("squares")
    for s in range(50):
        boxes = t.boxes(64, 64, s)
        assert len(boxes) in (3, 4)
        for top, left, bh, bw in boxes:
            assert bh == bw and 4 <= bh <= 14
            assert 0 <= top and top + bh <= 64 and 0 <= left and left + bw <= 64
    big = [b[2] for s in range(20) for b in t.boxes(256, 300, s)]
    assert min(big) >= 16 and max(big) <= 56 and max(big) > 30  # scaled ×4


def test_gray_is_luminance():
    x = images(b=2)
    d = create_task("gray")(x)
    y = (0.299 * x[:, 0].double() + 0.587 * x[:, 1].double() + 0.114 * x[:, 2].double()).round()
    assert torch.equal(d[:, 0].double(), y) and torch.equal(d[:, 0], d[:, 1]) and torch.equal(d[:, 1], d[:, 2])


def test_text_draws_words():
    from pyramidal.damage import font_files

    assert font_files(), "matplotlib's bundled fonts are expected"
    x = torch.zeros(8, 3, 64, 64, dtype=torch.uint8)
    d = create_task("text", train=True)(x, seeds=list(range(8)))
    frac = (d != 0).any(dim=1).float().mean(dim=(1, 2))
    assert (frac > 0.005).all() and (frac < 0.8).all()


def test_mixed_uses_one_or_two_tasks():
    t = create_task("mixed", train=True)
    counts = {len(t.choose(s)) for s in range(50)}
    assert counts == {1, 2}
    used = {t.tasks[i].name for s in range(200) for i in t.choose(s)}
    assert used == set(ALL) - {"mixed", "inpaint", "strokes", "camera"}  # camera: a model of its own
    only = create_task("mixed", tasks="gray")
    assert torch.equal(only(images()), create_task("gray")(images()))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 517),
    seed=st.integers(0, 2**63 - 1),
    train=st.booleans(),
    fill=st.integers(0, 255),
)
def test_property_any_size_any_seed(name, h, w, seed, train, fill):
    x = torch.full((1, 3, h, w), fill, dtype=torch.uint8)
    x[..., : h // 2, :] = 255 - fill
    d, mask = create_task(name, train=train).apply(x, seeds=[seed])
    assert d.shape == (1, 3, h, w) and d.dtype == torch.uint8
    if mask is not None:
        assert mask.shape == (1, 1, h, w) and mask.dtype == torch.bool


def test_unclipped_noise_keeps_the_values_an_8_bit_file_would_lose():
    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
    images[:, :, :, 4:] = 255
    seeds = list(range(6))
    clipped = create_task("noise", train=True)(images, seeds=seeds)
    assert clipped.dtype == torch.uint8
    assert torch.equal(create_task("noise", train=True, unclipped=0)(images, seeds=seeds), clipped)
    everything = create_task("noise", train=True, unclipped=1)(images, seeds=seeds)
    assert everything.dtype == torch.float32
    assert everything.min() < 0 and everything.max() > 255 and not torch.equal(everything, everything.round())
    assert torch.equal(everything.round().clamp(0, 255).to(torch.uint8), clipped)  # the same noise draw
    half = create_task("noise", train=True, unclipped=0.5)(images, seeds=seeds)
    kept = [not torch.equal(half[i], half[i].round()) for i in range(6)]
    assert any(kept) and not all(kept)
    for i in range(6):  # each image either as drawn or exactly its clipped 8-bit file
        assert torch.equal(half[i], everything[i] if kept[i] else clipped[i].float())


def test_unclipped_is_a_share_of_images():
    with pytest.raises(ValueError, match="share of images"):
        create_task("noise", train=True, unclipped=1.5)


def test_the_pair_loader_gives_unclipped_noise_to_the_model_beyond_its_range():
    from pyramidal.data.loader import make_loader

    class Flat(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3, 8, 8), 255 * (i % 2), dtype=torch.uint8)

    damaged, clean = next(iter(make_loader(Flat(), create_task("noise", train=True, unclipped=1), batch_size=4)))
    assert damaged.dtype == torch.float32 and (damaged.min() < -1 or damaged.max() > 1)
    assert clean.min() >= -1 and clean.max() <= 1


def test_sigma_dist_uniform_draws_as_before():
    task = NoiseTask(train=True)
    seeds = list(range(20))
    assert task.noise_levels(seeds) == [_rng(s).uniform(0.0, 130.0) for s in seeds]


def test_sigma_dist_low_puts_more_mass_at_low_sigma():
    seeds = list(range(2000))
    uniform = np.array(NoiseTask(train=True).noise_levels(seeds))
    low = np.array(NoiseTask(train=True, sigma_dist="low").noise_levels(seeds))
    assert low.min() >= 0 and low.max() <= 130
    assert (low < 25).mean() == pytest.approx(math.sqrt(25 / 130), abs=0.04)
    assert (uniform < 25).mean() == pytest.approx(25 / 130, abs=0.04)


@pytest.mark.parametrize("dist", NoiseTask.sigma_distributions)
def test_noise_levels_are_the_sigmas_applied(dist):
    task = NoiseTask(train=True, sigma_dist=dist)
    clean = torch.full((6, 3, 64, 64), 128, dtype=torch.uint8)
    seeds = [3, 11, 19, 27, 35, 43]
    damaged = task(clean, seeds=seeds).float() - 128
    for sigma, noise in zip(task.noise_levels(seeds), damaged):
        if sigma < 40:  # no clipping at 0 or 255 to bias the estimate
            assert noise.std().item() == pytest.approx(sigma, rel=0.05, abs=0.5)


def test_bad_sigma_dist():
    with pytest.raises(ValueError, match="choose one of uniform, low"):
        create_task("noise", train=True, sigma_dist="high")
    with pytest.raises(ValueError, match="a fixed sigma draws none"):
        create_task("noise", train=True, sigma=25, sigma_dist="low")
    assert create_task("noise", train=True, sigma_dist="low").options == {"sigma_dist": "low"}


def test_noise_eval_settings_report_sigma_15_and_keep_the_headline():
    assert {"sigma": 15} in NoiseTask.eval_settings()
    assert [s["sigma"] for s in NoiseTask.eval_settings()] == [15, 25, 50, 125]
    assert NoiseTask.headline_setting == {"sigma": 50}
