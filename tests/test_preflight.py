"""Every method checks its inputs before the run directory exists: bad input -> one error, nothing on disk."""

from __future__ import annotations

import pytest

from emocli import preflight as pf
from emocli.commands.train import execute
from emocli.errors import EmoError
from emocli.recipes.load import load_recipe
from emocli.registry import METHODS
from tests.conftest import run_emo


def _refused(tmp_path, name, *overrides, match):
    out = tmp_path / "run"
    recipe = load_recipe(name, [f"run.output_dir={out}", *overrides])
    with pytest.raises(EmoError, match=match) as err:
        execute(recipe)
    assert not out.exists()  # nothing was written
    return str(err.value)


def test_every_method_has_a_preflight():
    assert all(m.preflight for m in METHODS.values())


def test_emotion_encoder_reports_every_problem_at_once(tmp_path):
    message = _refused(tmp_path, "tiny/emotion-encoder", f"data.prepared={tmp_path / 'nothing'}",
                       f"model.backbone.pretrained={tmp_path / 'no-resnet'}", match="data.prepared")
    assert "model.backbone.pretrained" in message and "no-resnet" in message and "does not exist" in message


def test_empty_split_is_refused(emoset_tiny, tmp_path):
    from emocli.data.prepare import prepare_emoset

    val_only = prepare_emoset(str(emoset_tiny), tmp_path / "val-only", split="val")
    _refused(tmp_path, "tiny/emotion-encoder", f"data.prepared={val_only}", match="no 'train' images")
    _refused(tmp_path, "tiny/emoclip", f"data.prepared={val_only}", f"model.pretrained={tmp_path}",
             match="no 'train' images")


def test_precision_and_trackers(emoset_prepared, tmp_path, monkeypatch):
    import importlib.util

    import torch

    ok = [f"data.prepared={emoset_prepared}"]
    if not torch.cuda.is_available():
        _refused(tmp_path, "tiny/emotion-encoder", *ok, "launch.mixed_precision=fp16", match="fp16 needs a CUDA GPU")
    monkeypatch.setattr(pf, "_cpu_bf16_works", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(tmp_path, "tiny/emotion-encoder", *ok, "launch.mixed_precision=bf16", match="bf16 autocast does not run")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    _refused(tmp_path, "tiny/emotion-encoder", *ok, match=r"train.trackers: tensorboard is not installed")
    pf.check_all(*pf.train_checks(load_recipe("tiny/emotion-encoder", [*ok, "train.trackers=[]"])))


def test_bf16_on_this_cpu_is_allowed_where_it_runs():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    layer = torch.nn.Linear(4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            works = layer(torch.randn(1, 4)).dtype == torch.bfloat16
    except RuntimeError:
        works = False
    if works:
        pf.precision("bf16")
    else:
        with pytest.raises(EmoError):
            pf.precision("bf16")


def test_model_sources():
    pf.model_source("openai/clip-vit-large-patch14", "k")  # a Hub id: left to the loader
    pf.model_source("gpt2", "k")
    for bad in ("./models/tiny/sd", "/no/such/folder", "models/tiny/sd-typo/x"):
        with pytest.raises(EmoError, match="k: weights .* does not exist"):
            pf.model_source(bad, "k")


def test_the_other_methods(emoset_prepared, tmp_path):
    _refused(tmp_path, "tiny/emogen", f"data.prepared={emoset_prepared}", f"model.pretrained={tmp_path / 'no-sd'}",
             match="model.pretrained: Stable Diffusion .*no-sd' does not exist")
    message = _refused(tmp_path, "tiny/emogen", f"data.prepared={emoset_prepared}", f"model.pretrained={tmp_path}",
                       f"model.clip={tmp_path}", f"model.emotion_encoder={tmp_path}", match="data.alpha")
    assert "model.pretrained" not in message
    _refused(tmp_path, "tiny/emoclip", f"data.prepared={emoset_prepared}", f"model.pretrained={tmp_path}",
             f"data.captions={tmp_path / 'captions.json'}", match="data.captions: captions file")
    _refused(tmp_path, "tiny/emotion-classifier", f"data.prepared={tmp_path / 'x'}", f"model.clip={tmp_path}",
             match="data.prepared: .* is not a prepared EmoSet folder: it does not exist")
    (tmp_path / "samples").mkdir()
    _refused(tmp_path, "tiny/eval-generation", f"data.samples={tmp_path / 'samples'}",
             f"data.prepared={emoset_prepared}", match="holds no <emotion>/\\*.png")
    _refused(tmp_path, "tiny/grpo", f"data.prepared={emoset_prepared}", f"model.pretrained={tmp_path / 'no-vlm'}",
             match="model.pretrained: vision-language model .*no-vlm' does not exist")
    _refused(tmp_path, "tiny/eval-understanding", f"models.base={tmp_path}", f"models.tuned={tmp_path / 'no-run'}",
             match="models.tuned")


def test_cli_preflight_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    done = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", f"data.prepared={tmp_path / 'none'}",
                   f"run.output_dir={out}")
    assert done.returncode == 2 and "data.prepared" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()


def test_one_data_path_a_release_folder_must_be_prepared_first(emoset_tiny, tmp_path):
    from emocli.evaluation.reference import read_records

    _refused(tmp_path, "tiny/emotion-encoder", f"data.prepared={emoset_tiny}", match="not a prepared EmoSet folder")
    _refused(tmp_path, "tiny/emotion-classifier", f"data.prepared={emoset_tiny}", f"model.clip={tmp_path}",
             match="not a prepared EmoSet folder")
    with pytest.raises(EmoError, match="is an EmoSet release folder; prepare it first"):
        read_records(emoset_tiny)


def test_a_missing_input_names_the_command_that_makes_it(tmp_path, monkeypatch):
    """A tiny recipe run from an empty folder: each missing input's error says which `emo` command writes it."""
    assert pf.how_to_make("models/tiny/sd/vae") == "; make it with `emo models make-tiny --out models/tiny --only sd`"
    assert pf.how_to_make("/data/sd") == ""  # a real model is downloaded, not made
    monkeypatch.chdir(tmp_path)
    message = _refused(tmp_path, "tiny/emogen", match="model.pretrained")
    for wanted in ("emo models make-tiny --out models/tiny --only sd", "--only clip",
                   "`emo train emotion-encoder`", "emo data prepare emoset"):
        assert wanted in message, message
    message = _refused(tmp_path, "tiny/sevlm", match="ArtEmis")
    for wanted in ("emo data prepare artemis", "--only gpt2",
                   "emo data synth artemis --out data/artemis-tiny"):  # the synthetic VAD lexicon
        assert wanted in message, message
    message = _refused(tmp_path, "tiny/ldm", match="data.prepared")
    assert "emo data prepare captions" in message and "--only clip" in message, message
    (tmp_path / "samples" / "tiny" / "fear").mkdir(parents=True)
    (tmp_path / "samples" / "tiny" / "fear" / "0.png").write_bytes(b"")
    message = _refused(tmp_path, "tiny/eval-generation", match="models.inception")
    assert "emo eval tiny-weights --out models/tiny/metrics" in message, message
