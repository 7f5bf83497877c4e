"""The first method end to end on a tiny random ResNet and synthetic EmoSet, in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emocli.emotion_space import EmotionSpace
from emocli.recipes.load import load_recipe
from emocli.runs import latest_checkpoint, list_checkpoints, prepare_run
from tests.conftest import ROOT, shared_path


def _recipe(emoset, out, *overrides):
    return load_recipe("tiny/emotion-encoder", [f"data.prepared={emoset}", f"run.output_dir={out}", *overrides])


def _train(recipe, resume=False):
    from emocli.worker import run_method

    run = prepare_run(recipe, ["test"], resume=resume)
    run_method(run.dir, resume)
    return run.dir


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x]


@pytest.fixture(scope="module")
def trained(emoset_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "run"
    return _train(_recipe(emoset_prepared, out, "train.epochs=6", "train.log_every=2"))


def test_loss_falls_and_accuracy_above_chance(trained):
    losses = [x["loss"] for x in _losses(trained)]
    assert len(losses) >= 5
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first * 0.8, losses
    metrics = json.loads((trained / "final" / "metrics.json").read_text())
    assert set(metrics) >= {"train", "val", "test"}
    assert metrics["train"]["accuracy"] > 0.3  # chance is 1/8
    assert metrics["val"]["accuracy"] > 0.2


def test_outputs_load_back(trained):
    from emocli.methods.emotion_encoder.model import EmotionEncoder

    model = EmotionEncoder.from_pretrained(trained)
    rep = model.represent(torch.zeros(2, 3, 32, 32))
    assert rep.shape == (2, 768)
    space = EmotionSpace.load(trained / "final", expect_dim=768)
    assert space.mean.shape == (8, 768) and (space.std > 0).all()
    assert (trained / "recipe.yaml").is_file() and (trained / "versions.json").is_file()
    ckpt = latest_checkpoint(trained)
    assert (ckpt / "model" / "model.safetensors").is_file() and (ckpt / "trainer_state.json").is_file()
    assert not list((trained / "checkpoints").glob(".*tmp"))
    assert len(list_checkpoints(trained)) <= 2  # keep_checkpoints


def test_official_emotion_space_loads():
    folder = shared_path("data", "emogen-official", "emo_space")
    space = EmotionSpace.load(folder, expect_dim=768)
    assert space.mean.shape == (8, 768)
    norms = space.mean.norm(dim=1)
    assert 12 < norms.min() < norms.max() < 19  # documented: 12.7 (sadness) .. 18.3 (excitement)
    sample = space.sample("fear", 4, torch.Generator().manual_seed(0))
    assert sample.shape == (4, 768)


def test_emotion_space_round_trip_and_wrong_dim(tmp_path):
    from emocli.errors import EmoError

    feats = torch.randn(80, 16)
    labels = torch.arange(80) % 8
    space = EmotionSpace.fit(feats, labels)
    path = space.save(tmp_path)
    again = EmotionSpace.load(path)
    assert torch.allclose(again.mean, space.mean) and again.emotions == space.emotions
    assert torch.allclose(space.mean[3], feats[labels == 3].mean(0), atol=1e-6)
    with pytest.raises(EmoError, match="dimension 16"):
        EmotionSpace.load(path, expect_dim=768)


def test_resume_continues_at_same_step_with_same_weights(emoset_prepared, tmp_path):
    """6 steps + resume to 10 == 10 steps straight: model, optimizer, scheduler, RNG and data position
    all round-trip. (Random flips are off: they draw from Python's global RNG inside the data
    pipeline, which is not part of the bit-exact promise.)"""
    from safetensors.torch import load_file

    straight = _train(_recipe(emoset_prepared, tmp_path / "straight", "train.max_steps=10", "train.checkpoint_every=5",
                              "data.flip=false"))
    part = _recipe(emoset_prepared, tmp_path / "part", "train.max_steps=6", "train.checkpoint_every=3", "data.flip=false")
    _train(part)
    resumed = _train(_recipe(emoset_prepared, tmp_path / "part", "train.max_steps=10", "train.checkpoint_every=5",
                             "data.flip=false"), resume=True)
    steps = [x["step"] for x in _losses(resumed)]
    assert steps == sorted(set(steps)) and steps[-1] == 10
    assert "resumed from" in (resumed / "log.txt").read_text()
    a = load_file(str(straight / "final" / "model" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_existing_run_without_resume_is_refused(emoset_prepared, tmp_path):
    from emocli.errors import EmoError

    _train(_recipe(emoset_prepared, tmp_path / "r", "train.max_steps=2"))
    with pytest.raises(EmoError, match="--resume"):
        prepare_run(_recipe(emoset_prepared, tmp_path / "r", "train.max_steps=2"), ["test"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(emoset_prepared, tmp_path):
    from emocli.methods.emotion_encoder.train import EmotionEncoderTask
    from emocli.training import TrainingDiverged, fit, make_accelerator

    class Exploding(EmotionEncoderTask):
        calls = 0

        def loss(self, model, batch):
            Exploding.calls += 1
            loss, logs = super().loss(model, batch)
            return (loss * float("nan"), logs) if Exploding.calls > 4 else (loss, logs)

    recipe = _recipe(emoset_prepared, tmp_path / "nan", "train.max_steps=10", "train.checkpoint_every=2")
    run = prepare_run(recipe, ["test"])
    with pytest.raises(TrainingDiverged) as err:
        fit(Exploding(recipe), run, make_accelerator(run))
    assert "step 5" in str(err.value) and "step-4" in str(err.value)
    assert latest_checkpoint(run.dir).name == "step-4"


def test_sigint_saves_checkpoint_and_exits_cleanly(emoset_prepared, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "emocli", "train", "emotion-encoder", "tiny/emotion-encoder",
           f"data.prepared={emoset_prepared}", f"run.output_dir={out}", "train.max_steps=100000", "train.log_every=1",
           "~train.checkpoint_every"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and
                                          len((out / "metrics.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and (ckpt / "model" / "model.safetensors").is_file()


def test_ema_bf16_accumulation_and_schedule(emoset_prepared, tmp_path):
    """The shared loop's options together: EMA export, bf16 autocast, accumulation, warmup + cosine."""
    from safetensors.torch import load_file

    out = _train(_recipe(emoset_prepared, tmp_path / "ema", "train.max_steps=6", "train.grad_accum=2",
                         "train.ema.decay=0.5", "launch.mixed_precision=bf16", "optim.scheduler=cosine",
                         "optim.warmup_steps=2", "train.log_every=1", "train.checkpoint_every=3"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < lrs[1] and lrs[1] >= max(lrs[2:]) and lrs[-1] < lrs[2]  # warmup, then cosine decay
    ckpt = latest_checkpoint(out)
    ema = load_file(str(ckpt / "ema.safetensors"))
    final = load_file(str(out / "final" / "model" / "model.safetensors"))
    raw = load_file(str(ckpt / "model.safetensors"))
    key = "fc_1.weight"
    assert torch.allclose(final[key], ema[key]) and not torch.allclose(final[key], raw[key])
    assert "mixed precision bf16" in (out / "log.txt").read_text()


def test_corrupt_images_are_named_and_counted_not_fatal(tmp_path):
    from emocli.data.prepare import prepare_emoset
    from emocli.data.synth import synth_emoset

    root = synth_emoset(tmp_path / "bad", n=64, seed=1, grayscale=2, rgba=2)
    prepared = prepare_emoset(str(root), tmp_path / "prepared")
    # Images that broke after `emo data prepare` (disk errors, a partial copy) are skipped at training.
    records = [json.loads(x) for x in (prepared / "records.jsonl").read_text().splitlines()]
    for record in records[:3]:
        Path(record["image"]).write_bytes(b"not an image")
    out = _train(_recipe(prepared, tmp_path / "run", "train.max_steps=4", "train.batch_size=8"))
    log = (out / "log.txt").read_text()
    bad = json.loads((out / "final" / "metrics.json").read_text())["bad_images"]
    assert bad["count"] == 3 and all(p.endswith(".jpg") and p in log for p in bad["paths"])
    assert (out / "final" / "emotion_space.safetensors").is_file()


def test_clip_vision_backbone_option(emoset_prepared, tmp_path):
    from emocli.methods.emotion_encoder.model import EmotionEncoder

    out = _train(_recipe(emoset_prepared, tmp_path / "clip", "model.backbone.name=clip",
                         "model.backbone.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
                         "num_attention_heads: 4, image_size: 32, patch_size: 8}", "train.max_steps=3"))
    model = EmotionEncoder.from_pretrained(out)
    assert model.meta["backbone"] == "clip" and model.represent(torch.zeros(1, 3, 32, 32)).shape == (1, 768)
