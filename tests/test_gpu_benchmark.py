"""benchmarks/gpu/run.sh --tiny: the GPU benchmark's dry run on the CPU (tiny models, few steps).

The default test runs the environment and the first item through the real script (budgets, one JSON line
per measurement, the closing status line of each item, the report); the slow one runs every item.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"


def run_bench(out, *args, env=None, timeout=1800):
    full = {**os.environ, "OUT": str(out), **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), "--tiny", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def rows(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_tiny_first_items_append_results_and_report(tmp_path):
    done = run_bench(tmp_path, "env", "emogen_train")
    assert done.returncode == 0, done.stderr[-2000:] + (tmp_path / "log.txt").read_text()[-3000:]
    got = rows(tmp_path)
    status = {r["item"]: r["status"] for r in got if "status" in r}
    assert status == {"env": "done", "emogen_train": "done"}
    env = next(r for r in got if r.get("name") == "environment")
    assert env["versions"]["diffusers"] and env["gpu"] is None
    steps = {r["name"]: r for r in got if r["item"] == "emogen_train" and "name" in r}
    assert set(steps) == {"emo step", "original step", "emo step, UNet checkpointing",
                          "original step, UNet checkpointing"}
    assert all(r["samples_per_s"] > 0 and r["batch"] == 4 for r in steps.values())
    assert steps["emo step"]["model_tflop_per_step"] > 0
    report = list(tmp_path.glob("gpu-*.md"))
    assert len(report) == 1 and "| original step, UNet checkpointing |" in report[0].read_text()
    assert len(json.loads(next(tmp_path.glob("gpu-*.json")).read_text())) == len(got)


def test_unknown_item_and_spent_budget(tmp_path):
    done = run_bench(tmp_path, "nope")
    assert done.returncode == 2 and "unknown item 'nope'" in done.stderr
    # No time left: every item is recorded as skipped, none runs.
    done = run_bench(tmp_path, "env", env={"EMO_GPU_TOTAL_S": "5"})
    assert done.returncode == 0
    assert rows(tmp_path)[0] == {"item": "env", "status": "skipped", "why": "the run's 5 s were spent"}


def test_item_past_the_total_budget_is_killed_and_recorded(tmp_path):
    # A python3 on PATH that hangs for emogen_train (and runs the real one otherwise) makes the item
    # outlast what is left of the 14 s deterministically, however fast the machine is.
    fake = tmp_path / "bin"
    fake.mkdir()
    real = subprocess.run(["bash", "-c", "command -v python3"], capture_output=True, text=True).stdout.strip()
    (fake / "python3").write_text(f'#!/bin/sh\ncase "$*" in *emogen_train*) exec sleep 60;; esac\nexec {real} "$@"\n')
    (fake / "python3").chmod(0o755)
    out = tmp_path / "out"
    done = run_bench(out, "env", "emogen_train", env={"EMO_GPU_TOTAL_S": "14",
                                                     "PATH": f"{fake}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr[-2000:]
    status = {r["item"]: r["status"] for r in rows(out) if "status" in r}
    assert status["env"] == "done" and status["emogen_train"] in {"timeout", "skipped"}


@pytest.mark.slow
def test_tiny_every_item(tmp_path):
    done = run_bench(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = rows(tmp_path)
    status = {r["item"]: r["status"] for r in got if "status" in r}
    assert status == dict.fromkeys(("env", "emogen_train", "sample", "ldm_train", "zero2"), "done"), \
        (tmp_path / "log.txt").read_text()[-4000:]
    names = {r["name"] for r in got if "name" in r}
    assert {"emo sample, batch 2, UNet compiled", "torch.compile of the UNet", "emo train ldm step, LPIPS on",
            "zero2 resume"} <= names
    assert all(r["ok"] for r in got if r.get("name", "").startswith("zero2"))
