"""Data sources and the resumable (damaged, clean) loader."""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal.damage import create_task
from pyramidal.data.datasets import SkippedImageWarning
from pyramidal.data.loader import make_loader
from pyramidal.data.patches import celeba_shape
from pyramidal.data.sources import BUILTIN_PHOTOS, BUILTIN_VAL, list_images, load_source, split_counts
from pyramidal.errors import PyramidalError
from pyramidal.pixels import eight_bit_to_model, model_to_eight_bit, model_to_eight_bit_grid

from helpers import EVAL, TRAIN, cli, in_thread, one_error, picture, truncated


def save(path, h, w, seed=0, mode="RGB", fmt=None):
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 4 if mode == "RGBA" else 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, format=fmt)
    return path


def batches_of(loader):
    return [(d.clone(), c.clone()) for d, c in loader]


# ----------------------------------------------------------------------------------------------------------


def test_float_conversions():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    f = eight_bit_to_model(u)
    assert f.dtype == torch.float32 and f.min() == -1 and f.max() == 1
    assert torch.equal(f, u.float() / 127.5 - 1)
    assert torch.equal(model_to_eight_bit(f), u)
    assert torch.equal(model_to_eight_bit(torch.tensor([-3.0, 3.0, 0.0])), torch.tensor([0, 255, 128], dtype=torch.uint8))
    # unclipped: values past the range stay past it
    assert torch.equal(model_to_eight_bit_grid(torch.tensor([-3.0, 3.0, 0.0])), torch.tensor([-255.0, 510.0, 128.0]))
    # floats on the 8-bit grid (the loaders' batches) are converted in place; uint8 and other dtypes are copied
    grid = u.float()
    assert eight_bit_to_model(grid) is grid and torch.equal(grid, f)
    assert eight_bit_to_model(u, torch.float16).dtype == torch.float16 and u.dtype == torch.uint8
    # the model range back to 8 bits leaves its input alone
    before = f.clone()
    model_to_eight_bit(f)
    assert torch.equal(f, before)


@pytest.fixture(scope="module")
def builtin():
    return load_source("builtin", size=32, patches_per_epoch=40, val_crops=4)


def test_builtin_loads_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    src = load_source("builtin", size=32, patches_per_epoch=8, val_crops=2)
    x = src.split("train")[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert len(src.split("val")) == 2 * len(BUILTIN_VAL)


def test_builtin_split_by_photograph(builtin):
    assert builtin.names["val"] == list(BUILTIN_VAL) and len(BUILTIN_VAL) >= 3
    assert not set(builtin.names["train"]) & set(BUILTIN_VAL)
    assert set(builtin.names["train"]) | set(BUILTIN_VAL) == set(BUILTIN_PHOTOS)
    train = builtin.split("train")
    assert len(train) == 40
    # Patches are a pure function of (seed, epoch, index).
    assert torch.equal(train.get(3, 0), train.get(3, 0))
    assert not torch.equal(train.get(3, 0), train.get(3, 1))
    val = builtin.split("val")
    assert len(val) == 12 and val[0].shape == (3, 32, 32)
    again = load_source("builtin", size=32, val_crops=4, seed=9).split("val")
    assert all(torch.equal(val[i], again[i]) for i in range(len(val)))  # fixed crops, whatever the seed


def test_builtin_eval_images(builtin):
    imgs = builtin.eval_images("val", crop=256)
    assert [n for n, _ in imgs] == list(BUILTIN_VAL)
    assert all(t.shape == (3, 256, 256) and t.dtype == torch.uint8 for _, t in imgs)
    whole = dict(builtin.eval_images("val", crop=None))
    assert whole["astronaut"].shape == (3, 512, 512) and whole["chelsea"].shape == (3, 300, 451)
    assert torch.equal(whole["astronaut"][:, 128:384, 128:384], imgs[0][1])
    with pytest.raises(ValueError):
        builtin.split("training")


def test_builtin_grayscale_photos_are_rgb(builtin):
    moon = builtin.photos["moon"]
    assert moon.mode == "RGB"


# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for i in range(19):
        sub = root / ("a" if i % 2 else "b") / ("deep" if i % 3 == 0 else "")
        save(sub / f"img{i:02d}.png", 40 + 7 * i, 90 - i, seed=i, mode=["RGB", "L", "RGBA"][i % 3])
    # A file with a JPEG header and truncated data: readable header, fails when decoded (found by the scan).
    save(root / "trunc.jpg", 80, 80, seed=99)
    data = (root / "trunc.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (root / "bad.png").write_bytes(b"this is not an image")
    (root / "notes.txt").write_text("hello")
    (root / ".hidden").write_text("ignored")
    return root


def test_folder_skips_and_counts_unreadable(folder):
    with pytest.warns(SkippedImageWarning) as rec:
        src = load_source(f"folder:{folder}", size=32)
    messages = [str(w.message) for w in rec]
    assert all(any(name in m for m in messages) for name in ("bad.png", "notes.txt", "trunc.jpg"))
    assert sum("bad.png" in m for m in messages) == 1
    assert src.num_skipped == 3  # the truncated JPEG too: every file is decoded before the split
    files = [f for s in ("train", "val", "test") for f in src.files[s]]
    assert "trunc.jpg" not in files and len(files) == 19
    assert (len(src.files["train"]), len(src.files["val"]), len(src.files["test"])) == (17, 1, 1)


def test_folder_training_never_crashes_on_corrupt_file(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        src = load_source(f"folder:{folder}", size=32)
    # A file that breaks after the scan (a disk error, a file being replaced) is skipped when loaded.
    split = "train"
    broken = folder / src.files[split][0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n no longer an image")
    ds = src.split(split)
    loader = make_loader(ds, "noise", batch_size=4, train=split == "train", drop_last=False)
    with pytest.warns(SkippedImageWarning, match=broken.name):
        pairs = batches_of(loader)
    assert sum(d.shape[0] for d, _ in pairs) == len(ds)
    assert all(d.shape[1:] == (3, 32, 32) and c.dtype == torch.float32 for d, c in pairs)
    # eval images skip it too.
    with pytest.warns(SkippedImageWarning):
        names = [n for n, _ in src.eval_images(split)]
    assert src.files[split][0] not in names and len(names) == len(ds) - 1


def test_folder_empty_or_missing_fails_at_start(tmp_path):
    with pytest.raises(PyramidalError, match="no such folder"):
        load_source(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PyramidalError, match="no readable images"):
        load_source(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"nope")
    with pytest.warns(SkippedImageWarning), pytest.raises(PyramidalError, match="no readable images"):
        load_source(f"folder:{tmp_path / 'junk'}")
    with pytest.raises(PyramidalError, match="unknown data source"):
        load_source("imagenet")


def test_folder_split_is_deterministic(tmp_path):
    for i in range(30):
        save(tmp_path / "d" / f"{i:03d}.png", 16, 16, seed=i)
    a = load_source(f"folder:{tmp_path / 'd'}", size=8)
    b = load_source(f"folder:{tmp_path / 'd'}", size=8, seed=123)  # training seed does not move the split
    assert a.files == b.files
    assert (len(a.files["train"]), len(a.files["val"]), len(a.files["test"])) == (24, 3, 3)
    allf = a.files["train"] + a.files["val"] + a.files["test"]
    assert sorted(allf) == [f"{i:03d}.png" for i in range(30)]
    assert a.files["train"] != sorted(a.files["train"])  # shuffled, not alphabetical
    capped = load_source(f"folder:{tmp_path / 'd'}", size=8, max_images=10)
    assert [len(capped.files[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    other = load_source(f"folder:{tmp_path / 'd'}", size=8, split_seed=1)
    assert other.files != a.files
    assert split_counts(100) == (80, 10, 10) and split_counts(19) == (17, 1, 1)
    assert split_counts(1) == (1, 0, 0) and split_counts(2) == (1, 1, 0) and split_counts(3) == (1, 1, 1)


def test_folder_tiny_and_small_images(tmp_path):
    save(tmp_path / "one" / "x.png", 5, 3)
    with pytest.warns(UserWarning, match="validation"):
        src = load_source(f"folder:{tmp_path / 'one'}", size=16)
    for s in ("train", "val", "test"):
        x = src.split(s)[0]
        assert x.shape == (3, 16, 16)  # smaller than size: upscaled first
    assert src.eval_images("val", crop=None)[0][1].shape == (3, 5, 3)


def test_list_images(folder):
    with pytest.warns(SkippedImageWarning):
        files = list_images(folder)
    assert len(files) == 20 and all(f.suffix in (".png", ".jpg") for f in files)


# ----------------------------------------------------------------------------------------------------------


def fake_celeba(root, n=20, partition=True):
    d = root / "img_align_celeba"
    d.mkdir(parents=True)
    for i in range(1, n + 1):
        # 218×178 like the real aligned faces; a bright centre square stands in for the face.
        arr = np.full((218, 178, 3), 20 + i, dtype=np.uint8)
        arr[80:140, 60:120] = 240
        Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=95)
    if partition:
        lines = [f"{i:06d}.jpg {0 if i <= 14 else 1 if i <= 17 else 2}" for i in range(1, n + 1)]
        (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_with_partition_file(tmp_path):
    root = fake_celeba(tmp_path / "celeba")
    src = load_source(f"celeba:{root}", size=64)
    assert src.official
    assert src.files["train"] == [f"{i:06d}.jpg" for i in range(1, 15)]
    assert src.files["val"] == [f"{i:06d}.jpg" for i in range(15, 18)]
    assert src.files["test"] == [f"{i:06d}.jpg" for i in range(18, 21)]
    face = src.split("val")[0]
    assert face.shape == (3, 64, 64)
    # Prepared like the research: resize to 87×71, centre-crop 64.
    im = Image.open(root / "img_align_celeba" / "000015.jpg").convert("RGB").resize((71, 87), Image.BICUBIC)
    ref = np.asarray(im)[11:75, 3:67]
    assert np.array_equal(face.permute(1, 2, 0).numpy(), ref)
    train = src.split("train")
    assert train.get(0, 0).shape == (3, 64, 64) and torch.equal(train.get(0, 0), train.get(0, 0))
    names = [n for n, _ in src.eval_images("test")]
    assert names == ["000018.jpg", "000019.jpg", "000020.jpg"]
    capped = load_source(f"celeba:{root}", size=64, max_images=10)
    assert [len(capped.files[s]) for s in ("train", "val", "test")] == [8, 1, 1]


def test_celeba_without_partition_file(tmp_path):
    root = fake_celeba(tmp_path / "celeba", partition=False)
    src = load_source(f"celeba:{root}", size=128)
    assert not src.official
    assert [len(src.files[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert src.split("train").get(5, 2).shape == (3, 128, 128)
    assert celeba_shape(64) == (87, 71) and celeba_shape(128) == (174, 142)
    # The images folder itself is accepted too.
    same = load_source(f"celeba:{root / 'img_align_celeba'}", size=128)
    assert same.files == src.files


def test_celeba_missing_says_where_to_put_files(tmp_path):
    with pytest.raises(PyramidalError, match="img_align_celeba") as exc:
        load_source(f"celeba:{tmp_path / 'celeba'}")
    assert "downloads nothing" in str(exc.value)
    root = fake_celeba(tmp_path / "bad", n=3)
    (root / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(PyramidalError, match="list_eval_partition.txt:1"):
        load_source(f"celeba:{root}")


# ----------------------------------------------------------------------------------------------------------


def test_loader_pairs(builtin):
    task = create_task("squares", train=True)
    loader = make_loader(builtin.split("train"), task, batch_size=8, seed=3)
    assert len(loader) == 5
    pairs = batches_of(loader)
    assert len(pairs) == 5
    d, c = pairs[0]
    assert d.shape == c.shape == (8, 3, 32, 32) and d.dtype == torch.float32
    assert d.min() >= -1 and d.max() <= 1
    # The damage is exactly the task applied with the loader's per-sample seeds.
    idx = loader.batches()[0]
    assert torch.equal(model_to_eight_bit(d), task(model_to_eight_bit(c), seeds=loader.sample_seeds(idx)))


def test_loader_resume_reproduces_uninterrupted_run(builtin):
    def run(loader, epochs):
        out = []
        for e in epochs:
            loader.set_epoch(e)
            out.append(batches_of(loader))
        return out

    ds = builtin.split("train")
    full = run(make_loader(ds, "noise", batch_size=8, seed=5, train=True), [0, 1])
    # A fresh process-like setup: new source, new loader, resume in epoch 1 at batch 3.
    src = load_source("builtin", size=32, patches_per_epoch=40, val_crops=4)
    resumed = make_loader(src.split("train"), create_task("noise", train=True), batch_size=8, seed=5)
    resumed.set_epoch(1)
    resumed.skip_batches(3)
    tail = batches_of(resumed)
    assert len(tail) == 2
    for (d1, c1), (d2, c2) in zip(full[1][3:], tail):
        assert torch.equal(d1, d2) and torch.equal(c1, c2)
    # Epochs differ; the skip is used once.
    assert not torch.equal(full[0][0][1], full[1][0][1])
    assert len(batches_of(resumed)) == 5
    # A different seed gives a different run.
    other = make_loader(ds, "noise", batch_size=8, seed=6)
    assert not torch.equal(next(iter(other))[1], full[0][0][1])


def test_loader_samples_do_not_depend_on_batching(builtin):
    # Every random choice is a function of (seed, epoch, sample index), so the batch size (or the DDP
    # rank a sample lands on) changes nothing about any one sample.
    ds = builtin.split("train")
    a = batches_of(make_loader(ds, "mixed", batch_size=8, seed=2))
    b = batches_of(make_loader(ds, "mixed", batch_size=4, seed=2))
    assert torch.equal(torch.cat([d for d, _ in a]), torch.cat([d for d, _ in b]))
    assert torch.equal(torch.cat([c for _, c in a]), torch.cat([c for _, c in b]))


def test_loader_with_workers_matches(builtin):
    ds = builtin.split("train")
    a = batches_of(make_loader(ds, "jpeg", batch_size=8, seed=1, num_workers=0))
    b = batches_of(make_loader(ds, "jpeg", batch_size=8, seed=1, num_workers=1))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_validation_loader_is_fixed(builtin):
    val = builtin.split("val")
    loader = make_loader(val, create_task("noise", train=False), batch_size=5, train=False)
    assert len(loader) == 3  # 12 crops: the last partial batch is kept for validation
    first = batches_of(loader)
    loader.set_epoch(7)
    again = batches_of(loader)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(first, again))
    assert sum(d.shape[0] for d, _ in first) == 12


def test_loader_honours_sampler(builtin):
    from torch.utils.data.distributed import DistributedSampler

    ds = builtin.split("train")
    ranks = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = make_loader(ds, "gray", batch_size=4, sampler=sampler, seed=0)
        assert len(loader) == 5
        loader.set_epoch(2)
        ranks.append([i for b in loader.batches() for i in b])
        assert sampler.epoch == 2
    assert not set(ranks[0]) & set(ranks[1]) and set(ranks[0]) | set(ranks[1]) == set(range(40))
    # The same sample index gets the same clean patch and damage on any rank.
    loader = make_loader(ds, "squares", batch_size=4, seed=0)
    loader.set_epoch(2)
    order = loader.batches()
    i = ranks[1][0]
    assert i in [j for b in order for j in b]
    assert loader.sample_seeds([i]) == make_loader(ds, "squares", seed=0).sample_seeds([i], epoch=2)


def test_small_epoch_is_not_dropped(builtin):
    src = load_source("builtin", size=16, patches_per_epoch=5)
    loader = make_loader(src.split("train"), "blur", batch_size=8)
    assert len(loader) == 1 and batches_of(loader)[0][0].shape[0] == 5


def test_builtin_plus_extra_photos_only_grow_the_training_split(tmp_path):
    from PIL import Image

    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(np.full((1200, 900, 3), 120, np.uint8)).save(extra / "big.png")
    (extra / "broken.jpg").write_bytes(b"not a jpeg")
    plain = load_source("builtin", size=32)
    with pytest.warns(SkippedImageWarning, match="broken.jpg"):
        more = load_source(f"builtin+{extra}", size=32)
    assert more.names["val"] == plain.names["val"]
    assert more.names["train"] == plain.names["train"] + ["extra/big.png"]
    assert max(more.photos["extra/big.png"].size) == 800
    assert more.num_skipped == 1
    with pytest.raises(PyramidalError, match="no such folder"):
        load_source(f"builtin+{tmp_path / 'missing'}", size=32)


def test_builtin_takes_several_extra_folders(tmp_path):
    for folder, name in (("one", "a.png"), ("two", "a.png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / folder / name)
    src = load_source(f"builtin+{tmp_path / 'one'}+{tmp_path / 'two'}", size=16)
    assert [n for n in src.names["train"] if n.startswith("extra/")] == ["extra/one/a.png", "extra/two/a.png"]
    assert "one" in src.describe() and "two" in src.describe()


def test_a_missing_known_training_set_names_its_source(tmp_path):
    with pytest.raises(PyramidalError, match=r"bsds432: no such folder.*BSDS500.*scripts/get-bsds432.sh"):
        load_source(f"builtin+{tmp_path}+{tmp_path / 'bsds432'}", size=16)
    with pytest.raises(PyramidalError, match=r"elsewhere: no such folder of extra training photographs$"):
        load_source(f"builtin+{tmp_path / 'elsewhere'}", size=16)


def test_truncated_image_skipped_before_split(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(5):
        picture(data / f"good{i}.png", 48, 48, seed=i)
    bad = truncated(data / "trunc.jpg")
    torch.set_num_threads(1)
    code, _, err = cli(["train", *TRAIN, "--data", f"folder:{data}", "--steps", "2", "--val-images", "0",
                        "--batch-size", "2", "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    warnings = [line for line in err if str(bad) in line]
    assert len(warnings) == 1 and warnings[0].startswith("pyramidal train: warning: ") and "skipped" in warnings[0]
    assert all(line.startswith("pyramidal train: ") for line in err), err  # no Python source lines
    code, out, err = cli(["evaluate", *EVAL, "--data", f"folder:{data}"], capsys)
    assert code == 0 and "damaged input" in out
    assert sum(str(bad) in line for line in err) == 1

    junk = tmp_path / "junk"
    for i in range(3):
        truncated(junk / f"t{i}.jpg", seed=i)
    code, _, err = cli(["train", *TRAIN, "--data", f"folder:{junk}", "--steps", "1",
                        "--out", str(tmp_path / "runs2")], capsys)
    assert code == 2
    assert "3 unreadable files skipped" in one_error([e for e in err if " error: " in e], str(junk))
    assert not (tmp_path / "runs2").exists()


def test_loader_gives_each_images_sigma():
    from pyramidal.data.loader import make_loader
    from pyramidal.data.sources import load_source

    task = create_task("noise", train=True)
    ds = load_source("builtin", size=32, patches_per_epoch=8).split("train")
    loader = make_loader(ds, task, batch_size=4, seed=3, with_noise_level=True)
    damaged, clean, sigma = next(iter(loader))
    assert sigma.shape == (4,) and sigma.dtype == torch.float32
    seeds = loader.sample_seeds(loader.batches()[0])
    assert sigma.tolist() == pytest.approx(task.noise_levels(seeds))
    with pytest.raises(ValueError, match="no noise level"):
        make_loader(ds, create_task("jpeg", train=True), with_noise_level=True)


def test_training_data_skips_a_fifo(fifo_folder):
    from pyramidal.data.datasets import SkippedImageWarning
    from pyramidal.data.sources import load_source

    for i in range(5):
        picture(fifo_folder / f"more{i}.png", seed=i + 1)
    with pytest.warns(SkippedImageWarning, match="pipe.png: skipped, not a regular file"):
        source = in_thread(lambda: load_source(f"folder:{fifo_folder}", size=8))
    assert source is not None
