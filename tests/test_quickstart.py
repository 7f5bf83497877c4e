"""`emo quickstart`: the whole pipeline on tiny models, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_emo


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    done = run_emo("quickstart", "--out", str(out), "--n", "128", "--samples", "2", "--emogen-steps", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("data", "prepared", "emotion_encoder", "emogen", "samples", "eval"):
        assert Path(summary[key]).is_absolute() and Path(summary[key]).exists(), key
    assert (Path(summary["samples"]) / "grid.png").is_file()
    assert len(list(Path(summary["samples"]).glob("*/*.png"))) == 16
    assert "grid" in done.stdout
    metrics = json.loads((Path(summary["eval"]) / "metrics.json").read_text())
    assert {"fid", "lpips", "emo_a", "sem_c", "sem_d", "clip_i", "clip_t"} <= set(metrics["metrics"])
    assert (Path(summary["eval"]) / "report.html").is_file()
    # The EmoGen run it made is usable by `emo sample --run`.
    again = run_emo("sample", "--run", summary["emogen"], "--emotion", "awe", "--n", "1", "--out", str(tmp_path / "s"))
    assert again.returncode == 0, again.stderr[-2000:]
    # A second quickstart into the same folder is refused, nothing overwritten.
    twice = run_emo("quickstart", "--out", str(out))
    assert twice.returncode == 2 and "summary.json" in twice.stderr
