"""`pyramidal compare`: tiny models and budgets; the table, curves and figure; a comparison that resumes."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyramidal.cli import build_parser, main
from pyramidal.compare import PRESETS, RESEARCH_PARTS, parse_model_options
from pyramidal.compare.ablation import EVAL_OPTIONS, eval_flags, eval_settings
from pyramidal.compare.research import PLAN_KEYS, parse_entries
from pyramidal.errors import PyramidalError
from pyramidal.figures import spread
from pyramidal.models import create_model
from pyramidal.models.dense import UP
from pyramidal.models.summary import count_parameters

from helpers import REPO, script

TRAIN = ["--size", "32", "--batch-size", "4", "--train-option", "val_images=4", "--train-option", "patches_per_epoch=8",
         "--device", "cpu", "--precision", "fp32"]
EVAL = ["--eval-limit", "3", "--figure-rows", "2"]
TINY = ["--steps", "2", *TRAIN, *EVAL]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_compare_tiny_models_then_run_again(tmp_path, capsys):
    folder = tmp_path / "cmp"
    code = main(["compare", "--task", "squares", "--models", "basic21,b21up=basic21,pyramidal44",
                 "--model-option", "basic21:channels=[4,8,8]", "--model-option", "b21up:channels=[4,8,8]",
                 "--model-option", "b21up:up=upsample", "--model-option", "pyramidal44:m=4",
                 "--model-option", "pyramidal44:growth=2", "--out", str(folder), *TINY])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads((folder / "compare.json").read_text())
    rows = result["settings"][0]["rows"]
    models = [r for r in rows if r["kind"] == "model"]
    assert [r["model"] for r in models] == ["basic21", "b21up", "pyramidal44"]
    assert [r["architecture"] for r in models] == ["basic21", "basic21", "pyramidal44"]
    assert rows[0]["method"] == "damaged input"
    assert any("Navier" in r["method"] for r in rows)
    assert all(r["steps"] == 2 and r["psnr_hole"] is not None and r["ssim_hole"] is not None for r in models)
    assert result["runs"][1]["options"] == {"channels": [4, 8, 8], "up": "upsample"}
    # The upsample row is another network: no transposed conv, one bias more per up-sampled channel.
    assert models[1]["parameters"] - models[0]["parameters"] == 8 + 4
    assert len({run["run_dir"] for run in result["runs"]}) == 3
    table = (folder / "compare.md").read_text()
    assert "| `basic21` |" in table and "| `b21up` |" in table and "2 steps per model" in table
    assert "| hole PSNR (dB) | hole SSIM |" in table and result["command"] in table
    for name in ("compare_squares.png", "curves_squares.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG" and f"wrote {folder / name}" in out
        assert f"]({name})" in table
    for name in ("compare.md", "compare.json"):
        assert f"wrote {folder / name}" in out
    curves = result["curves"]
    assert set(curves) == {"basic21", "b21up", "pyramidal44"}
    assert all(c["step"][0] == 0 and c["step"][-1] == 2 and len(c["psnr_val"]) == len(c["step"]) for c in curves.values())
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["models"] == ["basic21", "b21up=basic21", "pyramidal44"] and plan["steps"] == 2
    state = json.loads((folder / "state.json").read_text())
    assert all(entry["done"] for entry in state.values())
    for run in result["runs"]:  # each run kept its own training folder and weights, inside the comparison
        assert Path(run["weights"]).exists() and Path(run["weights"]).is_relative_to(folder)
    trained = _mtimes(folder / "runs")

    # The command in the report, run again: nothing is trained again, the report is written again.
    again = shlex.split(result["command"])[2:] + ["--device", "cpu", "--precision", "fp32", *EVAL]
    assert main(["compare", *again]) == 0
    out = capsys.readouterr().out
    assert out.count("trained already") == 3 and "resuming the comparison" in out
    assert _mtimes(folder / "runs") == trained
    # --resume DIR alone takes the comparison's own arguments; other values are refused with one line.
    assert main(["compare", "--resume", str(folder)]) == 0
    assert capsys.readouterr().out.count("trained already") == 3
    assert main(["compare", "--resume", str(folder), "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "seed 0, not 3" in err and "\n" not in err
    assert main(["compare", "--models", "basic21", "--out", str(folder), *TINY]) == 2
    assert "holds a comparison with models" in capsys.readouterr().err
    assert _mtimes(folder / "runs") == trained and json.loads((folder / "plan.json").read_text()) == plan


def test_interrupted_row_stops_the_comparison_and_is_trained_on(tmp_path, capsys, monkeypatch):
    """Ctrl-C in training stops the whole comparison; a row without a checkpoint starts afresh next time."""
    from pyramidal.train import Trainer

    fit = Trainer.fit

    def interrupted_fit(self):
        run_dir = fit(self)
        self.interrupted = True  # as if SIGINT had stopped it after its last step
        return run_dir

    folder = tmp_path / "cmp"
    args = ["compare", "--models", "a=basic21,b=basic21", "--model-option", "channels=[4,8,8]", "--baselines", "none",
            "--out", str(folder), *TINY]
    monkeypatch.setattr(Trainer, "fit", interrupted_fit)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "stopped while training a;" in err and f"--resume {folder}" in err
    state = json.loads((folder / "state.json").read_text())
    assert list(state) == ["a"] and not state["a"]["done"]  # b never started
    first = folder / state["a"]["run_dir"]
    (first / "last.ckpt").unlink()  # as if killed before its first checkpoint
    monkeypatch.setattr(Trainer, "fit", fit)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stopped before its first checkpoint; training afresh" in out and "[2/2] b: training" in out
    state = json.loads((folder / "state.json").read_text())
    # The fresh run may reuse the removed folder's name when it starts within the same second.
    assert all(entry["done"] for entry in state.values())
    assert (folder / state["a"]["run_dir"] / "last.ckpt").is_file()


def test_budget_models_and_folders_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--models", "basic21", "--steps", "2", "--budget-minutes", "1"])
    assert main(["compare", "--out", str(tmp_path)]) == 2
    assert "--preset research" in capsys.readouterr().err
    for bad, message in ((["--models", "basic21,nosuchmodel"], "nosuchmodel"),
                         (["--models", "basic21,basic21"], "listed twice"),
                         (["--models", "basic21,x/y=basic21"], "LABEL=MODEL"),
                         (["--models", "basic21,pyramidal51=basic21"], "another model's name"),
                         (["--models", "basic21", "--train-option", "steps=5"], "--train-option steps"),
                         (["--models", "basic21", "--model-option", "b:m=4"], "not one of --models")):
        assert main(["compare", *bad, "--steps", "1", "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["compare", "--models", "basic21", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path)]) == 2
    assert "not a comparison folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_model_options_presets_and_labels():
    assert PRESETS["research"] == {"task": "squares",
                                   "models": ["basic21", "basic51", "pyramidal51", "pyramidal51cat"]}
    upsample = PRESETS["research-upsample"]
    assert upsample["models"][:4] == PRESETS["research"]["models"]
    assert parse_entries(upsample["models"])[4] == ("pyramidal51-upsample", "pyramidal51")
    assert upsample["model_options"] == {"pyramidal51-upsample": {"up": "upsample"}}
    assert PRESETS["depth"] == {"task": "block", "models": ["pyramidal457101215", "plain103"]}
    assert {preset for preset, _ in RESEARCH_PARTS.values()} <= set(PRESETS)
    assert "train_options" in PLAN_KEYS and "steps" in PLAN_KEYS
    opts = parse_model_options(["m=8", "b:growth=4", "channels=[4,8,8]"], ["a", "b"])
    assert opts == {"a": {"m": 8, "channels": [4, 8, 8]}, "b": {"m": 8, "growth": 4, "channels": [4, 8, 8]}}
    with pytest.raises(PyramidalError):
        parse_model_options(["c:m=8"], ["a", "b"])
    with pytest.raises(ValueError, match="unknown model"):
        parse_entries(["x=nosuchmodel"])
    assert spread(48, 4) == [0, 16, 31, 47] and spread(2, 4) == [0, 1]


def test_plain_family_up_option():
    """`up=` swaps the transposed convs of the plain family; the defaults keep the research's parameter counts."""
    for name, count in (("basic21", 186_659), ("basic51", 3_138_595), ("pyramidal51", 3_138_595),
                        ("pyramidal51cat", 4_116_355)):
        assert count_parameters(create_model(name)) == count
    small = {"channels": [4, 8, 8, 8, 8, 8]}
    default = create_model("pyramidal51", **small)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in default.modules()) == 5
    x = torch.rand(2, 3, 33, 35) * 2 - 1
    for up in UP.names():
        model = create_model("pyramidal51", up=up, **small).eval()
        kinds = {type(m).__name__ for m in model.up.modules()}
        assert ("ConvTranspose2d" in kinds) == (up == "convtranspose"), up
        with torch.no_grad():
            assert model(x).shape == x.shape
    assert "Upsample" in {type(m).__name__ for m in create_model("basic21", up="upsample").up.modules()}
    with pytest.raises(ValueError, match="unknown transition up 'bogus'.*upsample"):
        create_model("basic21", up="bogus")


def test_research_script_runs_the_research_parts():
    """scripts/research-comparison.sh: one `compare` per part of RESEARCH_PARTS, the experiment's budget for each."""
    printed = subprocess.run(["bash", str(REPO / "scripts/research-comparison.sh"), "--print", "--", "--device", "cpu"],
                             capture_output=True, text=True, check=True, env={**os.environ, "OUT": "somewhere"})
    lines = printed.stdout.strip().splitlines()
    assert len(lines) == len(RESEARCH_PARTS)
    parser = build_parser()
    for line, (part, (preset, task)) in zip(lines, RESEARCH_PARTS.items()):
        argv = shlex.split(line)
        assert argv[1:4] == ["-m", "pyramidal", "compare"]
        args = parser.parse_args(argv[3:])
        assert (args.preset, args.task, args.out) == (preset, task, f"somewhere/{part}")
        assert (args.steps, args.batch_size, args.size, args.seed, args.device) == (10_000, 16, 64, 0, "cpu")
    bad = subprocess.run(["bash", str(REPO / "scripts/research-comparison.sh"), "--print", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown part 'nope'" in bad.stderr and not bad.stdout


@pytest.mark.slow
def test_compare_resumes_after_a_real_kill(tmp_path):
    """SIGKILL while the second model trains; the same command again keeps the first and resumes the second."""
    folder = tmp_path / "cmp"
    steps = 200
    cmd = [sys.executable, "-m", "pyramidal", "compare", "--task", "squares", "--models", "basic21,pyramidal51",
           "--model-option", "basic21:channels=[4,8,8]", "--model-option", "pyramidal51:channels=[4,8,8,8,8,8]",
           "--steps", str(steps), *TRAIN, "--train-option", "patches_per_epoch=40",
           "--train-option", "checkpoint_every_steps=10", "--train-option", "log_images=0",
           "--eval-limit", "2", "--figure-rows", "2", "--baselines", "none", "--out", str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    second = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                state = json.loads((folder / "state.json").read_text())
            except (OSError, ValueError):
                state = {}
            if "pyramidal51" in state and (folder / state["pyramidal51"]["run_dir"] / "last.ckpt").exists():
                second = folder / state["pyramidal51"]["run_dir"]
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert second is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((folder / "state.json").read_text())
    assert state["basic21"]["done"] and not state["pyramidal51"]["done"]
    first = folder / state["basic21"]["run_dir"]
    first_files = _mtimes(first)
    killed_at = torch.load(second / "last.ckpt", weights_only=True)["step"]
    assert 0 < killed_at < steps
    assert not (folder / "compare.md").exists()

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"basic21: trained already ({steps} steps" in again.stdout
    assert f"pyramidal51: resuming {second} at step {killed_at}" in again.stdout
    assert _mtimes(first) == first_files  # the first model was not trained again
    state = json.loads((folder / "state.json").read_text())
    assert folder / state["pyramidal51"]["run_dir"] == second and state["pyramidal51"]["done"]
    assert torch.load(second / "last.ckpt", weights_only=True)["step"] == steps
    logged = [int(line.split(",")[0]) for line in (second / "metrics.csv").read_text().splitlines()[1:]]
    assert logged.count(0) == 1 and logged == sorted(logged)  # one run, not a second start from step 0
    result = json.loads((folder / "compare.json").read_text())
    assert [run["steps"] for run in result["runs"]] == [steps, steps]
    assert (folder / "compare.md").exists() and (folder / "curves_squares.png").exists()


# ----------------------------------------------------------------------------------------------------------
# The ablation: candidates trained and scored in this process


@pytest.mark.parametrize("task", sorted(EVAL_OPTIONS))
def test_ablation_scores_what_its_evaluate_command_says(task):
    """The settings an ablation scores are those its recorded `pyramidal evaluate` command reports."""
    from pyramidal.cli.evaluate import settings_from_args

    args = build_parser().parse_args(["evaluate", "--task", task, "--weights", "w.safetensors", *eval_flags(task)])
    assert settings_from_args(args) == eval_settings(task)


def test_ablation_trains_what_its_train_command_says(tmp_path):
    ab = script("ablation.py")
    args = ab.parse_args(["--candidates", "l1", "--cpu-minutes", "3", "--threads", "2", "--out", str(tmp_path)])
    args.config = ab.base_config(args, tmp_path / "noise")
    train, _ = ab.commands(args, "l1", tmp_path / "noise" / "l1")
    config = ab.train_config(train)
    assert (config.loss, config.max_cpu_minutes, config.threads, config.task) == ("l1", 3, 2, "noise")
    assert config.out == str(tmp_path / "noise" / "l1" / "runs") and config.lr == 1e-3  # the recipe's first stage


def test_ablation_candidate_runs_in_this_process_and_is_not_trained_again(tmp_path, monkeypatch):
    from functools import partial

    from pyramidal.compare import ablation, runs
    from pyramidal.config import resolve_config

    monkeypatch.setattr(ablation, "evaluate_weights", partial(runs.evaluate_weights, limit=1, crop=32))
    folder = tmp_path / "l1"
    config = resolve_config({"task": "noise", "model": "pyramidal44", "model_options": {"m": 4, "growth": 2},
                             "loss": "l1", "steps": 2, "size": 32, "batch_size": 4, "val_images": 4,
                             "patches_per_epoch": 8, "device": "cpu", "precision": "fp32", "log_images": 0,
                             "progress": False, "out": str(folder / "runs")})
    train = ["python", "-m", "pyramidal", "train", "--loss", "l1"]
    evaluate = ["python", "-m", "pyramidal", "evaluate", "--weights", ablation.RUN_WEIGHTS, *eval_flags("noise")]
    lines: list[str] = []
    result = ablation.run_candidate("l1", config, folder, task="noise", train_command=train,
                                    evaluate_command=evaluate, log=lines.append)
    assert result["steps"] == 2 and list(result["psnr"]) == ["sigma=15", "sigma=25", "sigma=50"]
    assert result["change"] == ablation.CANDIDATES["l1"][0] and result["train_command"] == shlex.join(train)
    assert str(Path(result["run_dir"]) / "best.safetensors") in result["evaluate_command"]
    assert Path(result["run_dir"]).is_relative_to(folder / "runs") and result["train_cpu_s"] > 0
    assert (folder / "train.log").stat().st_size > 0 and (folder / "evaluate.json").is_file()
    assert json.loads((folder / "result.json").read_text()) == result
    written = _mtimes(folder)
    assert ablation.run_candidate("l1", config, folder, task="noise", train_command=train,
                                  evaluate_command=evaluate, log=lines.append) == result
    assert "already done" in lines[-1] and _mtimes(folder) == written
    table = ablation.markdown([result], task="noise", base="`b.toml`", data="builtin", seed=0, cpu_minutes=1,
                              threads=1, python="python")
    assert "| `l1` |" in table and "RUN/best.safetensors" in table
