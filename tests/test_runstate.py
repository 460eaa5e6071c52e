"""pyramidal.runstate: the search for a non-finite value in a run's state, and the lock that lets one process at a
time train in a run folder (tested with two real processes)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from pyramidal.checkpoint import load_checkpoint
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model

from helpers import REPO, cli, copy_run, env, one_error


def test_first_nonfinite_sees_buffers_and_optimizer_state():
    from pyramidal.runstate import first_nonfinite

    model = create_model("basic21", channels=(4, 8, 8))
    assert first_nonfinite({"model": model.state_dict()}) is None
    model.encoder[0][0][1].running_var[2] = float("inf")  # a BatchNorm statistic, not a parameter
    assert first_nonfinite({"model": model.state_dict()}) == ("model.encoder.0.0.1.running_var", float("inf"))
    assert first_nonfinite({"optimizer": {"state": {3: {"exp_avg_sq": torch.tensor([1.0, float("nan")])}}}})[0] \
        == "optimizer.state.3.exp_avg_sq"


@pytest.mark.slow
def test_second_process_refused_while_first_trains_and_lock_dies_with_it(trained_run, tmp_path):
    from pyramidal.config import check_run_folder
    from pyramidal.runstate import RunLock

    run_dir = copy_run(trained_run, tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "pyramidal", "train", "--resume", str(run_dir), "--steps",
                              "100000", "--no-quiet", "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env(), cwd=REPO)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in first.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while True:  # "resuming RUN at step N" is printed once the first process holds the folder
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            try:
                if lines.get(timeout=1).startswith("resuming"):
                    break
            except queue.Empty:
                pass
        with pytest.raises(PyramidalError, match="another process"):
            RunLock(run_dir)  # this process, too, is refused while the other trains
        second = subprocess.run([sys.executable, "-m", "pyramidal", "train", "--resume", str(run_dir), "--steps",
                                 "3", "--lr", "1e-5"], capture_output=True, text=True, env=env(), cwd=REPO,
                                timeout=180)
        assert second.returncode == 2, second.stderr
        err = [line for line in second.stderr.splitlines() if line.strip()]
        one_error(err, str(run_dir), "another process")
        first.send_signal(signal.SIGKILL)  # a crash: the operating system drops the lock
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    RunLock(run_dir).release()  # free again
    check_run_folder(run_dir)  # and still resumable: every file was replaced whole
    assert load_checkpoint(run_dir / "last.ckpt")["step"] >= 2


def test_lock_released_when_training_ends(trained_run, tmp_path, capsys):
    from pyramidal.runstate import RunLock

    run_dir = copy_run(trained_run, tmp_path)
    lock = RunLock(run_dir)
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "3", "--threads", "1"], capsys)
    assert code == 2
    one_error(err, str(run_dir), "another process")
    lock.release()
    code, _, err = cli(["train", "--resume", str(run_dir), "--steps", "3", "--threads", "1"], capsys)
    assert code == 0, err
    RunLock(run_dir).release()  # the finished run let go of it
