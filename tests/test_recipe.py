"""Recipe switches (issue 17): loss, optimiser, dropout, normalisation, block kind, σ sampling, noise-level map,
CPU-time budget, the evaluation's σ = 15 setting and the ablation script."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.checkpoint import load_checkpoint
from pyramidal.config import LOSSES, TrainConfig, resolve_config, validate_config
from pyramidal.damage import NoiseTask, _rng, create_task
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model
from pyramidal.models.blocks import NORMS, noise_map_input
from pyramidal.models.dense import BLOCKS
from pyramidal.step import LOSS_FUNCTIONS, make_optimizer, psnr_from_mse, train_step
from pyramidal.train import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = dict(task="noise", model="pyramidal44", m=8, growth=4, data="builtin", size=32, batch_size=4,
            patches_per_epoch=16, val_images=4, log_images=0, precision="fp32", quiet=True, threads=1)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- loss and optimiser


def test_defaults_keep_the_research_recipe():
    c = TrainConfig()
    assert (c.loss, c.optimizer, c.max_cpu_minutes) == ("mse", "adam", None)
    model = create_model("pyramidal23456")
    assert model.config.block == "dense" and model.config.norm == "batch" and not model.noise_map
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.Dropout2d) and m.p == 0.2 for m in model.modules())
    assert NoiseTask(train=True).sigma_dist == "uniform"


@pytest.mark.parametrize("objective", LOSSES)
def test_train_step_minimises_the_chosen_objective(objective):
    torch.manual_seed(0)
    model = create_model("pyramidal44", m=8, growth=4, dropout=0.0)
    opt = make_optimizer(model.parameters(), "adam", 1e-3, 0.0, torch.device("cpu"))
    clean = torch.rand(2, 3, 16, 16) * 2 - 1
    damaged = (clean + 0.3 * torch.randn_like(clean)).clamp(-1, 1)
    loss, output = train_step(model, opt, damaged, clean, device=torch.device("cpu"), precision="fp32",
                              objective=objective)
    assert loss.item() == pytest.approx(LOSS_FUNCTIONS[objective](output, clean).item(), rel=1e-5)


def test_charbonnier_is_a_smooth_l1():
    a, b = torch.zeros(100), torch.linspace(-1, 1, 100)
    assert LOSS_FUNCTIONS["charbonnier"](a, b).item() == pytest.approx(F.l1_loss(a, b).item(), abs=1e-3)
    assert LOSS_FUNCTIONS["charbonnier"](a, a).item() == pytest.approx(1e-3)  # ε at zero error, smooth there


def test_the_psnr_loss_is_minus_the_images_mean_psnr():
    clean = torch.zeros(3, 3, 8, 8)
    output = clean + torch.tensor([0.5, 0.05, 0.005]).view(3, 1, 1, 1)
    psnrs = [psnr_from_mse(e * e) for e in (0.5, 0.05, 0.005)]
    assert LOSS_FUNCTIONS["psnr"](output, clean).item() == pytest.approx(10 * math.log10(4) - sum(psnrs) / 3,
                                                                         abs=1e-4)


def test_the_psnr_loss_weighs_each_image_equally_in_decibels():
    """Halving a small error gains as much as halving a large one (6 dB of one image's PSNR); under the MSE the
    small error hardly counts."""
    clean = torch.zeros(2, 3, 8, 8)
    errors = torch.tensor([0.4, 0.01]).view(2, 1, 1, 1)
    for name, equal in (("psnr", True), ("mse", False)):
        loss = LOSS_FUNCTIONS[name]
        base = loss(clean + errors, clean).item()
        gain_large = base - loss(clean + errors * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1), clean).item()
        gain_small = base - loss(clean + errors * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1), clean).item()
        assert (gain_small == pytest.approx(gain_large, rel=1e-4)) is equal
        assert gain_small > 0
    assert LOSS_FUNCTIONS["psnr"](clean, clean).item() == pytest.approx(-100.0)  # ε caps an exact image


def test_a_bad_loss_is_one_line():
    with pytest.raises(PyramidalError, match=r"--loss 'l3': choose one of mse, l1, charbonnier"):
        validate_config(TrainConfig(loss="l3"))


def test_adamw_decouples_the_weight_decay():
    """With no gradient, AdamW shrinks a weight by lr·wd; Adam's L2 term goes through the adaptive step."""
    after = {}
    for name in ("adam", "adamw"):
        p = nn.Parameter(torch.ones(1))
        opt = make_optimizer([p], name, lr=0.1, weight_decay=0.1, device=torch.device("cpu"))
        p.grad = torch.zeros(1)
        opt.step()
        after[name] = p.item()
    assert after["adamw"] == pytest.approx(1 - 0.1 * 0.1)
    assert after["adam"] == pytest.approx(1 - 0.1, rel=1e-3)  # L2 grad 0.1, normalised to a full lr step


def test_training_logs_psnr_from_the_mse_whatever_the_loss(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY, steps=2, log_every=1, loss="l1", out=str(tmp_path))).fit()
    import csv

    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("PSNR/train")]
    assert rows
    for r in rows:  # the L1 loss is larger than the MSE for errors under 1: PSNR is not computed from it
        assert float(r["PSNR/train"]) != pytest.approx(10 * math.log10(4 / float(r["loss/train"])), abs=1e-3)


# --------------------------------------------------------------------------- dropout and normalisation


def test_dropout_from_a_config_file(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('task = "noise"\nmodel = "pyramidal23456"\ndropout = 0.0\n')
    config = resolve_config(config_file=str(path))
    model = create_model(config.model, **config.model_kwargs())
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.modules())


@pytest.mark.parametrize("norm", NORMS.names())
def test_norm_option(norm):
    model = create_model("pyramidal457", m=8, growth=4, norm=norm).eval()
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")
    x = torch.rand(1, 3, 19, 23) * 2 - 1
    assert model(x).shape == x.shape
    # It trains: a backward pass through every norm (no norm once broke it, ReLU overwriting a skip in place).
    model.train()
    for memory_efficient in (False, True):
        model = create_model("pyramidal457", m=8, growth=4, norm=norm, memory_efficient=memory_efficient)
        model(torch.rand(2, 3, 16, 16)).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_bad_norm_or_block_names_the_choices():
    with pytest.raises(ValueError, match="unknown normalisation 'group'.*batch, layer, none"):
        create_model("pyramidal44", norm="group")
    with pytest.raises(ValueError, match="unknown block 'resnet'.*dense, nafnet"):
        create_model("pyramidal44", block="resnet")
    with pytest.raises(ValueError, match="needs dense=true"):
        create_model("pyramidal44", block="nafnet", dense=False)


# --------------------------------------------------------------------------- block kinds


@pytest.mark.parametrize("block", BLOCKS.names())
@pytest.mark.parametrize("size", [(17, 29), (32, 32), (5, 70)])
def test_every_block_kind_any_size(block, size):
    torch.manual_seed(0)
    model = create_model("pyramidal457", m=8, growth=4, block=block, dropout=0.0).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1


@pytest.mark.parametrize("block", BLOCKS.names())
def test_every_block_kind_trains_from_its_first_layer(block):
    torch.manual_seed(0)
    model = create_model("pyramidal457", m=8, growth=4, block=block, dropout=0.0).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    # One update first: NAFNet's β and γ start at 0 (the identity), which would block gradients to the convs inside.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.mse_loss(model(x), x.flip(-1)).backward()
    opt.step()
    opt.zero_grad()
    F.mse_loss(model(x), x.flip(-1)).backward()
    first = model.stem[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    inner = [p.grad for n, p in model.encoder[0].named_parameters() if p.grad is not None and p.dim() == 4]
    assert inner and all(g.abs().sum() > 0 for g in inner)


def test_block_kinds_count_their_parameters():
    counts = {b: sum(p.numel() for p in create_model("pyramidal457", m=8, growth=4, block=b).parameters())
              for b in BLOCKS.names()}
    assert all(n > 0 for n in counts.values())
    assert len(set(counts.values())) == len(counts)  # each kind builds its own layers
    stage = BLOCKS.get("nafnet")(10, 4, 3)
    assert stage.out_channels == 12 and stage.concat_input
    features = [torch.rand(1, 6, 8, 8), torch.rand(1, 4, 8, 8)]
    out = stage.extend(features)
    assert len(out) == 3 and out[:2] == features and out[2].shape == (1, 12, 8, 8)


# --------------------------------------------------------------------------- σ sampling


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


def test_sigma_dist_is_a_train_flag_only():
    from pyramidal.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert "sigma_dist" in {a.dest for a in subs["train"]._actions}
    assert "sigma_dist" not in {a.dest for a in subs["evaluate"]._actions}
    assert "sigma_dist" not in {a.dest for a in subs["degrade"]._actions}


def test_noise_eval_settings_report_sigma_15_and_keep_the_headline():
    assert {"sigma": 15} in NoiseTask.eval_settings()
    assert [s["sigma"] for s in NoiseTask.eval_settings()] == [15, 25, 50, 125]
    assert NoiseTask.headline_setting == {"sigma": 50}


# --------------------------------------------------------------------------- noise-level map


def test_noise_map_input():
    images = torch.zeros(2, 3, 5, 7)
    x = noise_map_input(images, torch.tensor([25.5, 51.0]))
    assert x.shape == (2, 4, 5, 7)
    assert torch.allclose(x[0, 3], torch.full((5, 7), 0.1)) and torch.allclose(x[1, 3], torch.full((5, 7), 0.2))
    assert torch.equal(x[:, :3], images)
    assert torch.allclose(noise_map_input(images, 51.0)[:, 3], torch.full((2, 5, 7), 0.2))


def test_noise_map_model_takes_four_channels():
    model = create_model("pyramidal44", m=8, growth=4, noise_map=True).eval()
    assert model.noise_map and model.stem[0].in_channels == 4
    assert model(torch.zeros(1, 4, 9, 9)).shape == (1, 3, 9, 9)
    with pytest.raises(ValueError, match="not both"):
        create_model("pyramidal44", noise_map=True, mask_input=True)


def test_loader_gives_each_images_sigma():
    from pyramidal.data import load_source, make_loader

    task = create_task("noise", train=True)
    ds = load_source("builtin", size=32, patches_per_epoch=8).split("train")
    loader = make_loader(ds, task, batch_size=4, seed=3, with_noise_level=True)
    damaged, clean, sigma = next(iter(loader))
    assert sigma.shape == (4,) and sigma.dtype == torch.float32
    seeds = loader.sample_seeds(loader.batches()[0])
    assert sigma.tolist() == pytest.approx(task.noise_levels(seeds))
    with pytest.raises(ValueError, match="no noise level"):
        make_loader(ds, create_task("jpeg", train=True), with_noise_level=True)


def test_noise_map_training_and_restore(tmp_path):
    from pyramidal.evaluate import evaluate
    from pyramidal.inference import restore_array

    run_dir = Trainer(TrainConfig(**TINY, steps=2, model_options={"noise_map": True}, out=str(tmp_path))).fit()
    model = load_checkpoint_model(run_dir)
    image = torch.rand(3, 20, 24) * 2 - 1
    assert restore_array(model, image, sigma=25).shape == image.shape
    with pytest.raises(PyramidalError, match="--sigma S"):
        restore_array(model, image)
    with pytest.raises(PyramidalError, match="from 0 to 255"):
        restore_array(model, image, sigma=300)
    blind = create_model("pyramidal44", m=8, growth=4).eval()
    with pytest.raises(PyramidalError, match="sigma=25: this model has no noise-level input"):
        restore_array(blind, image, sigma=25)
    result = evaluate(run_dir / "best.safetensors", "noise", limit=1, crop=32, settings=[{"sigma": 25}],
                      baselines="none")
    row = next(r for r in result["settings"][0]["rows"] if r["kind"] == "model")
    assert "σ given" in row["method"] and math.isfinite(row["psnr"])


def load_checkpoint_model(run_dir: Path) -> nn.Module:
    from pyramidal.checkpoint import load_weights

    return load_weights(run_dir / "best.safetensors").eval()


def test_noise_map_needs_a_task_with_a_noise_level(tmp_path):
    with pytest.raises(PyramidalError, match="noise_map: task jpeg has no noise level"):
        Trainer(TrainConfig(**{**TINY, "task": "jpeg"}, steps=1, model_options={"noise_map": True},
                            out=str(tmp_path)))


def test_restore_cli_refuses_sigma_for_a_blind_model(tmp_path):
    import subprocess

    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "in.png")
    proc = subprocess.run([sys.executable, "-m", "pyramidal", "restore", str(tmp_path / "in.png"), "-o",
                           str(tmp_path / "out"), "--task", "noise", "--sigma", "25"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    assert "--sigma 25: this model has no noise-level input" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- CPU-time budget


def test_max_cpu_minutes_stops_training_and_sums_over_resumes(tmp_path):
    from pyramidal.config import resume_config

    run_dir = Trainer(TrainConfig(**TINY, max_cpu_minutes=0.01, steps=10_000, out=str(tmp_path))).fit()
    first = load_checkpoint(run_dir / "last.ckpt")
    assert 0 < first["step"] < 10_000 and first["cpu_s"] >= 0.6
    Trainer(resume_config(run_dir, {"max_cpu_minutes": 0.02})).fit()  # as `train --resume RUN --max-cpu-minutes`
    second = load_checkpoint(run_dir / "last.ckpt")
    assert second["step"] > first["step"] and second["cpu_s"] >= 1.2


def test_max_cpu_minutes_zero_trains_nothing(tmp_path):
    run_dir = Trainer(TrainConfig(**TINY, max_cpu_minutes=0, out=str(tmp_path))).fit()
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 0
    assert (run_dir / "best.safetensors").is_file()  # the step-0 validation still leaves weights


def test_max_cpu_minutes_is_checked():
    with pytest.raises(PyramidalError, match="--max-cpu-minutes must be at least 0"):
        validate_config(TrainConfig(max_cpu_minutes=-1))
    c = TrainConfig(max_cpu_minutes=1)
    validate_config(c)
    assert c.epochs is None  # a CPU budget is a length: no default epoch count on top


# --------------------------------------------------------------------------- the ablation script


def _ablation():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "scripts" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_commands_and_table(tmp_path):
    ab = _ablation()
    args = ab.parse_args(["--candidates", "baseline,nafnet", "--cpu-minutes", "3", "--nice", "10",
                          "--out", str(tmp_path)])
    args.config = ab.base_config(args, tmp_path / "noise")
    assert "lr = 0.001" in (tmp_path / "noise" / "base.toml").read_text()  # the noise recipe's first stage
    train, evaluate = ab.commands(args, "nafnet", tmp_path / "nafnet")
    assert train[:3] == ["nice", "-n", "10"]
    assert train[train.index("--max-cpu-minutes") + 1] == "3" and train[train.index("--config") + 1] == str(tmp_path / "noise" / "base.toml")
    assert train[-4:] == ["--model-option", "block=nafnet", "--growth", "7"]
    assert evaluate[evaluate.index("--sigma") + 1:] == ["15", "25", "50"]
    results = [{"name": n, "change": ab.CANDIDATES[n][0], "steps": 10, "run_dir": "R", "psnr": {"sigma=25": v},
                "train_command": f"{args.python} -m pyramidal train X", "evaluate_command": "python -m pyramidal e R"}
               for n, v in (("baseline", 20.0), ("nafnet", 20.5))]
    table = ab.markdown(args, results)
    assert "| `nafnet` |" in table and "| 20.50 | +0.50 |" in table
    assert "`python -m pyramidal train X`" in table


def test_ablation_refuses_an_unknown_candidate(capsys):
    with pytest.raises(SystemExit):
        _ablation().parse_args(["--candidates", "baseline,bigger"])
    assert "unknown bigger" in capsys.readouterr().err


def test_every_candidate_flag_is_a_train_flag():
    from pyramidal.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for name, (_, extra) in _ablation().CANDIDATES.items():
        assert {f for f in extra if f.startswith("--")} <= flags, name


def _learning_curves():
    spec = importlib.util.spec_from_file_location("learning_curves", REPO / "scripts" / "learning-curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_curves_plot_and_table(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = ["step,epoch,loss/train,PSNR/val"] + [f"{s},0,0.1," for s in range(0, 1001, 50)]
    rows += [f"{s},0,,{20 + s / 100:.2f}" for s in range(0, 1001, 100)]  # rises 1 dB per 100 steps
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    lc = _learning_curves()
    assert lc.main(["-o", str(tmp_path / "c.png"), f"ramp={run}"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "c.png").stat().st_size > 1000
    line = next(x for x in out.splitlines() if x.startswith("| ramp |"))
    assert "20.00 @ 0" in line and "30.00 @ 1,000" in line and "| 30.00 |" in line
    assert "+5.00 dB" in line  # the best (30.0) against the best of the first half (25.0 at step 500)
    with pytest.raises(SystemExit):
        lc.main([f"empty={tmp_path}"])


# --------------------------------------------------------------------------- recipes that start from other weights


def test_init_weights_builtin_task_names_the_shipped_file(tmp_path):
    from pyramidal.hub import builtin_weights_path, resolve_init_weights

    assert resolve_init_weights("builtin:inpaint") == builtin_weights_path("inpaint")
    assert resolve_init_weights(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"
    with pytest.raises(PyramidalError, match="init_weights='builtin:nonsense'"):
        resolve_init_weights("builtin:nonsense")


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
