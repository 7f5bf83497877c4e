"""A full disk (OSError ENOSPC injected into the writers): one clear error naming the path and the cause,
no partial folder that looks complete, the last complete checkpoint intact, and --resume afterwards."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from PIL import Image

from emocli.errors import EmoError
from emocli.runs import latest_checkpoint
from emocli.training import fit, make_accelerator
from tests.test_training_loop import _run, _Toy


def _enospc(path="?"):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


class _DiskFills(_Toy):
    """save_pretrained fails (disk full) when it writes into a folder whose path contains `when`."""

    def __init__(self, when: str):
        super().__init__()
        self.when = when

    def save_pretrained(self, model, directory, state_dict=None):
        if self.when in str(directory):
            raise _enospc(directory / "model.safetensors")
        super().save_pretrained(model, directory, state_dict)


def _final_weight(run):
    from safetensors.torch import load_file

    return load_file(str(run.dir / "final" / "model" / "model.safetensors"))["weight"]


def test_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_resumes(tmp_path):
    straight = _run(tmp_path / "a", max_steps=4, checkpoint_every=2)
    fit(_Toy(), straight, make_accelerator(straight))

    run = _run(tmp_path / "b", max_steps=4, checkpoint_every=2)
    with pytest.raises(EmoError) as err:
        fit(_DiskFills(".step-4.tmp"), run, make_accelerator(run))
    message = str(err.value)
    assert "cannot write checkpoint" in message and ".step-4.tmp" in message
    assert "No space left on device (ENOSPC)" in message and "--resume" in message and "step-2" in message
    assert err.value.exit_code != 0 and "\n" not in message
    assert latest_checkpoint(run.dir).name == "step-2"
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-2"]  # no partial step-4
    assert not run.final.exists()

    fit(_Toy(), run, make_accelerator(run), resume=True)  # space freed
    torch.testing.assert_close(_final_weight(run), _final_weight(straight), rtol=0, atol=1e-6)


def test_full_disk_while_exporting_final_weights(tmp_path):
    run = _run(tmp_path, max_steps=2)
    with pytest.raises(EmoError, match=r"cannot write the final weights .*\.final\.tmp.*ENOSPC.*--resume"):
        fit(_DiskFills(".final.tmp"), run, make_accelerator(run))
    assert not run.final.exists() and not (run.dir / ".final.tmp").exists()
    assert latest_checkpoint(run.dir).name == "step-2"
    result = fit(_Toy(), run, make_accelerator(run), resume=True)
    assert result.step == 2 and (run.final / "model" / "model.safetensors").is_file()


def test_torch_save_disk_errors_are_recognised():
    from emocli.training import _write_error

    # What torch.save raises when the disk is full (seen writing to /dev/full).
    assert _write_error(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    assert _write_error(_enospc()).errno == errno.ENOSPC
    assert _write_error(ValueError("a bug")) is None


def test_full_disk_while_writing_samples_leaves_out_unchanged(tmp_path, monkeypatch):
    from emocli.samples import SampleWriter

    out = tmp_path / "samples"
    with SampleWriter(out) as writer:
        writer.write("awe", "awe_0000", Image.new("RGB", (8, 8)), {"seed": 0})
        writer.commit()
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))

    real_save, calls = Image.Image.save, []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            raise _enospc(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(EmoError, match=r"cannot write sample .*fear_0002\.png: No space left on device"):
        with SampleWriter(out) as writer:
            for i in range(4):
                writer.write("fear", f"fear_{i:04d}", Image.new("RGB", (8, 8)), {"seed": i})
            writer.commit()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # nothing half-added
    assert [p.name for p in tmp_path.iterdir()] == ["samples"]  # no staging folder left


def test_full_disk_while_preparing_leaves_nothing(emoset_tiny, tmp_path, monkeypatch):
    from emocli.data import prepare

    real = prepare.write_jsonl

    def full(path, rows):
        if path.name == "attributes.jsonl":
            raise _enospc(path)
        return real(path, rows)

    monkeypatch.setattr(prepare, "write_jsonl", full)
    out = tmp_path / "prepared"
    with pytest.raises(EmoError) as err:
        prepare.prepare_emoset(str(emoset_tiny), out)
    message = str(err.value)
    assert "cannot write the prepared folder at" in message and "attributes.jsonl" in message
    assert "No space left on device (ENOSPC)" in message and f"nothing was written to {out}" in message
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(prepare, "write_jsonl", real)
    prepare.prepare_emoset(str(emoset_tiny), out)
    assert json.loads((out / "prepare.json").read_text())["counts"]["total"] > 0


def test_every_data_writer_stages_its_folder_and_reports_a_full_disk(tmp_path, monkeypatch):
    """prepare captions (like every `emo data` writer) goes through staged_folder: a write error mid-way
    is one line naming the path and ENOSPC, leaves no partial folder, and keeps an existing output."""
    import emocli.data.prepare as prepare_module
    from emocli.data.captions import prepare_captions, synth_captions

    source = synth_captions(tmp_path / "src", n=12, seed=0)
    out = tmp_path / "prepared"
    prepare_captions(source, out)
    before = sorted(p.name for p in out.iterdir())

    real_write_jsonl = prepare_module.write_jsonl

    def full_disk(path, rows):
        real_write_jsonl(path, rows)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(prepare_module, "write_jsonl", full_disk)  # captions imports it when it runs
    with pytest.raises(EmoError, match="No space left on device.*ENOSPC") as info:
        prepare_captions(source, out, overwrite=True)
    assert ".partial-" in str(info.value)  # names the staging path it could not write
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared.")]
