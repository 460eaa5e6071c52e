"""The research scripts under scripts/: the ablation's commands and table, the learning-curve plot."""

from __future__ import annotations

import pytest

from helpers import script


def test_ablation_commands_and_table(tmp_path):
    ab = script("ablation.py")
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
        script("ablation.py").parse_args(["--candidates", "baseline,bigger"])
    assert "unknown bigger" in capsys.readouterr().err


def test_every_candidate_flag_is_a_train_flag():
    from pyramidal.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for name, (_, extra) in script("ablation.py").CANDIDATES.items():
        assert {f for f in extra if f.startswith("--")} <= flags, name


def test_learning_curves_plot_and_table(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = ["step,epoch,loss/train,PSNR/val"] + [f"{s},0,0.1," for s in range(0, 1001, 50)]
    rows += [f"{s},0,,{20 + s / 100:.2f}" for s in range(0, 1001, 100)]  # rises 1 dB per 100 steps
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    lc = script("learning-curves.py")
    assert lc.main(["-o", str(tmp_path / "c.png"), f"ramp={run}"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "c.png").stat().st_size > 1000
    line = next(x for x in out.splitlines() if x.startswith("| ramp |"))
    assert "20.00 @ 0" in line and "30.00 @ 1,000" in line and "| 30.00 |" in line
    assert "+5.00 dB" in line  # the best (30.0) against the best of the first half (25.0 at step 500)
    with pytest.raises(SystemExit):
        lc.main([f"empty={tmp_path}"])
