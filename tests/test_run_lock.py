"""One run directory, one writer: RUN/run.lock holds host, PID and start time for the run's life."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys

import pytest

from emocli.errors import EmoError
from emocli.runs import LOCK_NAME, run_lock
from tests.conftest import run_emo


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(tmp_path):
    with run_lock(tmp_path) as path:
        holder = json.loads(path.read_text())
        assert holder["host"] == platform.node() and holder["pid"] == os.getpid() and holder["started"]
        with pytest.raises(EmoError) as err:
            with run_lock(tmp_path):
                pass
        message = str(err.value)
        assert "in use by another run" in message and f"PID {os.getpid()}" in message
        assert platform.node() in message and holder["started"] in message and "\n" not in message
        assert path.is_file()  # the refused launch leaves the holder's lock alone
    assert not path.exists() and list(tmp_path.iterdir()) == []  # released, nothing left


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"host": platform.node(), "pid": gone.pid, "started": "2026-12-01T10:00:00+0000"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING, logger="emocli"), run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"PID {gone.pid}" in caplog.text and "2026-12-01T10:00:00" in caplog.text and "gone" in caplog.text

    # A PID that now belongs to a later process (this one) is stale too: the recorded start differs.
    (tmp_path / LOCK_NAME).write_text(json.dumps({**stale, "pid": os.getpid(), "process_start": "1"}))
    with run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["process_start"] != "1"


def test_emo_train_into_a_locked_run_directory_is_refused(emoset_prepared, tmp_path):
    run_dir = tmp_path / "run"
    with run_lock(run_dir):  # this test process plays the first launch, still running
        out = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", f"data.prepared={emoset_prepared}",
                      f"run.output_dir={run_dir}", "train.max_steps=1", timeout=300)
    assert out.returncode != 0
    error = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(error) == 1 and "in use by another run" in error[0] and f"PID {os.getpid()}" in error[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "recipe.yaml").exists()

    # Once the first run has ended, the same command trains, and leaves no lock behind.
    out = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", f"data.prepared={emoset_prepared}",
                  f"run.output_dir={run_dir}", "train.max_steps=1", timeout=300)
    assert out.returncode == 0, out.stderr
    assert (run_dir / "metrics.jsonl").is_file() and not (run_dir / LOCK_NAME).exists()
