"""A writer that drops bytes and reports success (safetensors or PIL on a full device): the check before
the publishing rename catches it, and nothing incomplete carries a published name."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from emocli.errors import EmoError
from emocli.training import fit, make_accelerator
from emocli.written import check_file, check_tree
from tests.test_training_loop import _run, _Toy


def _files(folder):
    from safetensors.torch import save_file

    save_file({"a": torch.arange(64, dtype=torch.float32), "b": torch.ones(3, 5)}, str(folder / "w.safetensors"))
    Image.new("RGB", (16, 16), "red").save(folder / "p.png")
    np.save(folder / "a.npy", np.arange(100, dtype=np.float32))
    torch.save({"x": torch.zeros(100)}, folder / "optimizer.bin")
    (folder / "s.json").write_text(json.dumps({"step": 4, "loss": 0.25}))
    return sorted(folder.iterdir())


def test_every_checked_format_passes_whole_and_fails_short(tmp_path):
    files = _files(tmp_path)
    check_tree(tmp_path)  # complete files pass
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[:-4])  # the last 4 bytes never reached the disk
        with pytest.raises(OSError) as err:
            check_file(path)
        assert err.value.errno == errno.EIO and err.value.filename == str(path), path
        assert "incomplete after writing" in err.value.strerror
        path.write_bytes(data)
    with pytest.raises(OSError, match="3 of 5 bytes"):
        (tmp_path / "t.txt").write_text("abc")
        check_file(tmp_path / "t.txt", size=5)
    # A staged name keeps its format: `.grid.png.tmp` is checked as a PNG.
    staged = tmp_path / ".grid.png.tmp"
    staged.write_bytes((tmp_path / "p.png").read_bytes()[:-1])
    with pytest.raises(OSError, match="no PNG end chunk"):
        check_file(staged)


def _short_safetensors(monkeypatch, when: str):
    """safetensors' save_file writes all but the last 8 bytes into paths containing `when`, and returns."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        if when in str(filename):
            os.truncate(filename, os.path.getsize(filename) - 8)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_silently_short_checkpoint_is_not_published(tmp_path, monkeypatch):
    _short_safetensors(monkeypatch, ".step-4.tmp")
    run = _run(tmp_path, max_steps=4, checkpoint_every=2)
    with pytest.raises(EmoError) as err:
        fit(_Toy(), run, make_accelerator(run))
    message = str(err.value)
    assert "cannot write checkpoint" in message and "model.safetensors" in message and "(EIO)" in message
    assert "incomplete after writing" in message and "\n" not in message and "step-2" in message
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-2"]  # no short step-4
    assert not run.final.exists()


def test_a_silently_short_export_is_not_published(tmp_path, monkeypatch):
    _short_safetensors(monkeypatch, ".final.tmp")
    run = _run(tmp_path, max_steps=2)
    with pytest.raises(EmoError, match=r"cannot write the final weights .*incomplete after writing.*--resume"):
        fit(_Toy(), run, make_accelerator(run))
    assert not run.final.exists() and not (run.dir / ".final.tmp").exists()


def test_a_silently_short_sample_or_grid_is_not_published(tmp_path, monkeypatch):
    from emocli.samples import SampleWriter, save_png

    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):  # PIL on a full device: returns, the tail is missing
        real_save(self, fp, *args, **kwargs)
        os.truncate(fp, os.path.getsize(fp) - 12)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "samples"
    with pytest.raises(EmoError, match=r"cannot write sample .*awe_0000\.png: the file is incomplete"):
        with SampleWriter(out) as writer:
            writer.write("awe", "awe_0000", Image.new("RGB", (8, 8)), {"seed": 0})
            writer.commit()
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="no PNG end chunk"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "step-000002.png")
    assert not (tmp_path / "step-000002.png").exists()
