"""EmpathDiffuser: encodings against diffusers' pipeline, the conditional U-ViT, and the tiny pipeline end to end."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from tests.conftest import run_emo

# The tiny runs are small matrices: one thread is faster than two contending ones on a loaded machine.
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """models/tiny/unidiffuser, models/tiny/metrics and a prepared synthetic AvaMERG, laid out as the tiny recipes expect."""
    from emocli.data.avamerg import prepare_avamerg
    from emocli.data.avamerg_synth import synth_avamerg
    from emocli.evaluation.tiny import make_tiny_metric_weights
    from emocli.testing.tiny import save_tiny_unidiffuser

    root = tmp_path_factory.mktemp("empath")
    save_tiny_unidiffuser(root / "models" / "tiny" / "unidiffuser", seed=0)
    make_tiny_metric_weights(root / "models" / "tiny" / "metrics")
    source = synth_avamerg(root / "data" / "avamerg-tiny", n=400, seed=0)
    prepare_avamerg(source, source / "media", root / "data" / "avamerg-tiny-prepared", val_fraction=0.15)
    return root


def _pipeline(workdir):
    from diffusers import UniDiffuserPipeline

    return UniDiffuserPipeline.from_pretrained(str(workdir / "models" / "tiny" / "unidiffuser"))


def test_encodings_match_diffusers_pipeline(workdir):
    from emocli.data.avamerg import read_prepared
    from emocli.methods.empathdiffuser.features import encode_faces, encode_texts, load_parts

    _, samples = read_prepared(workdir / "data" / "avamerg-tiny-prepared")
    parts = load_parts(str(workdir / "models" / "tiny" / "unidiffuser"))
    pipe = _pipeline(workdir)
    texts = [s["speaker_utterance"] for s in samples[:3]]
    ours = encode_texts(parts, texts, "cpu")
    states = pipe.encode_prompt(texts, "cpu", 1, False)[0]
    assert torch.allclose(ours, pipe.text_decoder.encode(states), atol=1e-5)
    assert ours.shape == (3, pipe.unet.config.num_text_tokens, pipe.unet.config.text_dim)

    from emocli.data.emoset import load_rgb

    faces = [s["speaker_image"] for s in samples[:3]]
    enc = encode_faces(parts, faces, 32, "cpu")
    clip = pipe.encode_image_clip_latents([load_rgb(f) for f in faces], 3, 1, torch.float32, "cpu")
    assert torch.allclose(enc["clip"][:, 0], clip, atol=1e-5)
    from emocli.methods.empathdiffuser.features import face_pixels

    dist = pipe.vae.encode(torch.stack([face_pixels(f, 32) for f in faces])).latent_dist
    assert torch.allclose(enc["latent_mean"], dist.mean, atol=1e-5)


def test_patch_positions_interpolate_bilinearly():
    from diffusers import UniDiffuserModel

    from emocli.methods.empathdiffuser.model import resize_patch_positions

    unet = UniDiffuserModel(text_dim=8, clip_img_dim=8, num_text_tokens=4, num_attention_heads=1, attention_head_dim=8,
                            in_channels=4, out_channels=4, num_layers=1, sample_size=8, patch_size=1,
                            activation_fn="gelu", num_embeds_ada_norm=1000, norm_num_groups=1)
    with torch.no_grad():  # patch grid 8x8: channel 0 = column index, channel 1 = row index
        rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        unet.pos_embed[0, 7:, 0] = cols.flatten()
        unet.pos_embed[0, 7:, 1] = rows.flatten()
        head = unet.pos_embed[:, :7].clone()
    resize_patch_positions(unet, 4)
    assert unet.pos_embed.shape == (1, 7 + 16, 8) and unet.config.sample_size == 4 and unet.num_patches == 16
    assert torch.equal(unet.pos_embed[:, :7], head)
    grid = unet.pos_embed[0, 7:, 0].reshape(4, 4)
    # half-pixel bilinear 8 -> 4 samples source coordinates 2i + 0.5: a ramp 0..7 becomes 0.5, 2.5, 4.5, 6.5
    assert torch.allclose(grid[0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert torch.allclose(unet.pos_embed[0, 7:, 1].reshape(4, 4)[:, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))


def test_condition_and_null_condition(workdir):
    from diffusers import UniDiffuserModel

    from emocli.methods.empathdiffuser.model import EmpathDiffuser

    torch.manual_seed(0)
    unet = UniDiffuserModel.from_pretrained(str(workdir / "models" / "tiny" / "unidiffuser"), subfolder="unet")
    model = EmpathDiffuser(unet).eval()
    with torch.no_grad():
        model.null_condition.normal_()
    b, n, dt = 2, unet.num_text_tokens, unet.config.text_dim
    response = [torch.randn(b, 4, 8, 8), torch.randn(b, 1, 32), torch.randn(b, n, dt)]
    cond_a = [torch.randn(b, 4, 8, 8), torch.randn(b, 1, 32), torch.randn(b, n, dt)]
    cond_b = [torch.randn_like(c) for c in cond_a]
    with torch.no_grad():
        out_a = model(*response, 500, 20, *cond_a)
        out_b = model(*response, 500, 20, *cond_b)
        drop = torch.tensor([True, False])
        null_a = model(*response, 500, 20, *cond_a, drop_condition=drop)
        null_b = model(*response, 500, 20, *cond_b, drop_condition=drop)
    assert [tuple(o.shape) for o in out_a] == [(b, 4, 8, 8), (b, 1, 32), (b, n, dt), (b, 7)]
    assert not torch.allclose(out_a[0], out_b[0])  # the speaker condition reaches the prediction
    assert torch.allclose(null_a[0][0], null_b[0][0], atol=1e-6)  # a dropped condition does not
    assert not torch.allclose(null_a[0][1], null_b[0][1])


def _train(workdir, *overrides):
    result = run_emo("train", "empathdiffuser", "tiny/empathdiffuser", *overrides, cwd=workdir, env=ENV, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "runs" / "tiny-empathdiffuser"


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(workdir, tmp_path):
    run = _train(workdir, "train.max_steps=30", "train.checkpoint_every=30", "validation.face_samples=4",
                 "validation.face_steps=2")
    assert (run / "final" / "model" / "model.safetensors").is_file()
    face = json.loads((workdir / "data" / "avamerg-tiny-prepared" / "samples.jsonl").read_text().splitlines()[0])
    out = tmp_path / "empathize"
    result = run_emo("empathize", "--run", str(run), "--utterance", "i feel afraid at home.", "--face",
                     face["speaker_image"], "--n", "2", "--steps", "3", "--out", str(out), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    sidecar = json.loads((out / "0000_1.json").read_text())
    assert sidecar["emotion"] in sidecar["probabilities"] and abs(sum(sidecar["probabilities"].values()) - 1) < 1e-3
    assert isinstance(sidecar["reply"], str) and sidecar["seed"] == 1 and sidecar["guidance"] == 3.0
    from PIL import Image

    assert Image.open(out / "0000_0.png").size == (32, 32)
    assert "speaker emotion" in result.stdout and result.stdout.count("reply:") == 2

    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"utterance": "so happy today", "face": face["speaker_image"], "name": "x"}) + "\n")
    result = run_emo("empathize", "--run", str(run), "--batch", str(batch), "--steps", "2", "--decoding", "beam",
                     "--out", str(tmp_path / "b"), env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "b" / "x.json").is_file()

    result = run_emo("eval", "empathy", "tiny/eval-empathy", "data.max_samples=6", "sample.steps=2",
                     cwd=workdir, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "runs" / "tiny-eval-empathy" / "metrics.json").read_text())
    assert metrics["n"] == 6 and set(metrics["text"]) >= {"bleu1", "bleu4", "sacrebleu", "dist1", "dist2"}
    assert metrics["fid"] is not None and metrics["emotion"]["n"] == 6
    assert (workdir / "runs" / "tiny-eval-empathy" / "report.md").is_file()


def test_bad_empathize_inputs_are_one_line(workdir, tmp_path):
    """Checked before any model loads: a missing face, a file that is not an image, a run of another method."""
    face = json.loads((workdir / "data" / "avamerg-tiny-prepared" / "samples.jsonl").read_text().splitlines()[0])
    run = tmp_path / "no-run"
    not_image = tmp_path / "face.png"
    not_image.write_text("hello")
    other_run = tmp_path / "other"
    other_run.mkdir()
    (other_run / "run.json").write_text(json.dumps({"method": "emogen"}))
    for args, expected in [
        (["--face", str(tmp_path / "missing.png")], "does not exist"),
        (["--face", str(not_image)], "is not a readable image"),
        (["--face", face["speaker_image"], "--run", str(other_run)], "not an EmpathDiffuser run"),
    ]:
        full = ["empathize", "--run", str(run), "--utterance", "hi", *args]
        result = run_emo(*full, env=ENV)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr


def test_preflight_rejects_a_missing_prepared_folder(tmp_path):
    result = run_emo("train", "empathdiffuser", "tiny/empathdiffuser", f"data.prepared={tmp_path / 'nope'}",
                     f"run.output_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "not a prepared AvaMERG folder" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tiny_training_learns_the_speaker_condition(workdir):
    """The full tiny recipe: held-out emotion macro-F1 >= 0.3 (chance ~0.14) and generated listener faces
    closer to their own target than to a target of another emotion."""
    shutil.rmtree(workdir / "runs" / "tiny-empathdiffuser", ignore_errors=True)
    run = _train(workdir, "train.eval_every=1000")
    evals = [json.loads(line)["eval"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "eval" in json.loads(line)]
    final = evals[-1]
    assert final["val_emotion_macro_f1"] >= 0.3, final
    assert final["val_face_distance_matched"] < final["val_face_distance_mismatched"], final
    assert final["val_face_closer_to_matched"] > 0.5, final


@pytest.mark.slow
def test_full_size_two_steps(tmp_path):
    """UniDiffuser-v1 shapes (1536-d, 30 blocks, 64-d text, 512-d CLIP, data-type token), random weights,
    256 px faces (positions interpolated 64 -> 32 latents), 2 optimiser steps with activation checkpointing.
    SGD instead of the recipe's AdamW keeps it to ~8 GB of RAM (AdamW's two fp32 moments would add ~8 GB)."""
    from diffusers import UniDiffuserModel

    from emocli.methods.empathdiffuser.model import EmpathDiffuser, resize_patch_positions

    if os.environ.get("EMO_SKIP_FULL_SIZE"):
        pytest.skip("EMO_SKIP_FULL_SIZE set")
    unet = UniDiffuserModel(text_dim=64, clip_img_dim=512, num_text_tokens=77, num_attention_heads=24,
                            attention_head_dim=64, in_channels=4, out_channels=4, num_layers=30, sample_size=64,
                            patch_size=2, activation_fn="gelu", num_embeds_ada_norm=1000, block_type="unidiffuser",
                            pre_layer_norm=False, use_timestep_embedding=False, ff_final_dropout=True,
                            use_data_type_embedding=True)
    resize_patch_positions(unet, 32)
    model = EmpathDiffuser(unet, gradient_checkpointing=True).train()
    assert sum(p.numel() for p in model.parameters()) > 0.9e9
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=3e-5)
    b = 1
    for _ in range(2):
        inputs = [torch.randn(b, 4, 32, 32), torch.randn(b, 1, 512), torch.randn(b, 77, 64)]
        out = model(*inputs, torch.tensor([500]), torch.tensor([20]), *[torch.randn_like(x) for x in inputs])
        loss = sum(o.float().pow(2).mean() for o in out[:3]) + torch.nn.functional.cross_entropy(out[3], torch.tensor([2]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert out[0].shape == (b, 4, 32, 32) and out[3].shape == (b, 7) and torch.isfinite(loss)


def test_save_and_load_keep_an_untied_caption_decoder(tmp_path):
    """GPT-2 ties its LM head to the token embedding when built; a fine-tuned decoder whose two differ must
    come back with both (loading one must not overwrite the other)."""
    from diffusers import UniDiffuserModel, UniDiffuserTextDecoder

    from emocli.methods.empathdiffuser.model import EmpathDiffuser

    torch.manual_seed(0)
    unet = UniDiffuserModel(text_dim=8, clip_img_dim=8, num_text_tokens=4, num_attention_heads=1, attention_head_dim=8,
                            in_channels=4, out_channels=4, num_layers=1, sample_size=4, patch_size=2,
                            activation_fn="gelu", num_embeds_ada_norm=1000, norm_num_groups=1)
    decoder = UniDiffuserTextDecoder(prefix_length=4, prefix_inner_dim=16, prefix_hidden_dim=8, vocab_size=50,
                                     n_positions=32, n_embd=16, n_layer=1, n_head=2, n_inner=32)
    head = decoder.transformer.lm_head
    head.weight = torch.nn.Parameter(head.weight.detach().clone() + 1.0)  # as after untied fine-tuning
    model = EmpathDiffuser(unet, text_decoder=decoder)
    model.save_pretrained(tmp_path)
    loaded = EmpathDiffuser.from_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
