"""EmoGen stage 2 on tiny models: the loss falls, only the mapper learns, resume, the run samples."""

from __future__ import annotations

import json

import pytest
import torch

from emocli.recipes.load import load_recipe
from emocli.runs import latest_checkpoint, prepare_run
from tests.conftest import run_emo


@pytest.fixture(scope="module")
def setup_dirs(emoset_tiny, tmp_path_factory):
    """Tiny models, a prepared synthetic EmoSet with encoder alpha, a trained tiny emotion encoder."""
    from emocli.data.alpha import compute_alpha
    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import make_tiny
    from emocli.worker import run_method

    root = tmp_path_factory.mktemp("emogen")
    models = make_tiny(root / "models", which=("sd", "clip"))
    prepared = prepare_emoset(str(emoset_tiny), root / "prepared")
    enc = load_recipe("tiny/emotion-encoder", [f"data.prepared={prepared}", f"run.output_dir={root / 'encoder'}",
                                               "train.max_steps=10"])
    run_method(prepare_run(enc, ["test"]).dir, False)
    compute_alpha(prepared, classifier=str(root / "encoder"), scoring="in-sample")
    return {"root": root, "models": models, "prepared": prepared, "encoder": root / "encoder"}


def _recipe(d, out, *overrides):
    return load_recipe("tiny/emogen", [
        f"model.pretrained={d['models']['sd']}", f"model.clip={d['models']['clip']}",
        f"model.emotion_encoder={d['encoder']}", f"data.prepared={d['prepared']}", f"run.output_dir={out}",
        *overrides])


def test_gradients_reach_only_the_mapper(setup_dirs):
    from accelerate import Accelerator

    from emocli.methods.emogen.train import EmoGenTask

    recipe = _recipe(setup_dirs, setup_dirs["root"] / "grad")
    run = prepare_run(recipe, ["test"])
    task = EmoGenTask(recipe, run)
    task.setup(Accelerator(cpu=True))
    batch = torch.utils.data.default_collate([task.train_dataset[i] for i in range(4)])
    loss, logs = task.loss(task.model, batch)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    frozen = [task.pipe.unet, task.pipe.vae, task.pipe.text_encoder, task.clip, task.encoder]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())
    assert {"loss_diffusion", "loss_attr", "alpha"} <= set(logs)
    # Per-sample alpha and attributes are real batch columns, not the first sample's.
    assert batch["alpha"].shape == (4,) and batch["attr_index"].shape == (4,)


def _probe(setup_dirs, name, *overrides):
    """An EmoGenTask set up on the CPU, and a batch of 4."""
    from accelerate import Accelerator

    from emocli.methods.emogen.train import EmoGenTask

    recipe = _recipe(setup_dirs, setup_dirs["root"] / name, *overrides)
    task = EmoGenTask(recipe, prepare_run(recipe, ["test"]))
    task.setup(Accelerator(cpu=True))
    return task, torch.utils.data.default_collate([task.train_dataset[i] for i in range(4)])


def test_pooled_feature_is_the_placeholder_state_like_the_original(setup_dirs):
    """The attribute loss projects the placeholder's hidden state by default; loss.pooled_token=eos reads
    end-of-text. In the original the placeholder had the largest id, so CLIP's argmax pooling found it."""
    task, batch = _probe(setup_dirs, "pooled")
    assert task.recipe.loss.pooled_token == "placeholder"
    seen = []
    task.clip.text_projection.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    captured = {}
    task.pipe.text_encoder.register_forward_hook(lambda m, a, out: captured.update(out=out))
    task.loss(task.model, batch)
    ids = task.prompt_ids.expand(4, -1)
    original_position = ids.argmax(dim=1)  # what argmax pooling over the original's token ids reads
    assert (ids[torch.arange(4), original_position] == task.placeholder_id).all()
    hidden = captured["out"].last_hidden_state.detach()
    assert torch.allclose(seen[-1], hidden[torch.arange(4), original_position])
    assert not torch.allclose(seen[-1], captured["out"].pooler_output.detach())

    task.recipe.loss.pooled_token = "eos"
    task.loss(task.model, batch)
    assert torch.allclose(seen[-1], captured["out"].pooler_output.detach())
    eos = (ids == task.pipe.tokenizer.eos_token_id).int().argmax(dim=1)
    assert torch.allclose(seen[-1], captured["out"].last_hidden_state.detach()[torch.arange(4), eos])


def test_only_clip_text_tower_is_loaded_and_attribute_names_stay_raw(setup_dirs):
    from transformers import CLIPModel, CLIPTextModelWithProjection

    task, _ = _probe(setup_dirs, "text-only")
    assert isinstance(task.clip, CLIPTextModelWithProjection)
    assert not any("vision" in name for name, _ in task.clip.named_parameters())
    full = CLIPModel.from_pretrained(setup_dirs["models"]["clip"])
    n_text = sum(p.numel() for p in full.text_model.parameters()) + full.text_projection.weight.numel()
    assert sum(p.numel() for p in task.clip.parameters()) == n_text
    assert torch.equal(task.clip.text_projection.weight, full.text_projection.weight)
    # attribute features: raw names (underscores kept) by default, as the original fed them
    from emocli.methods.emogen.train import attribute_texts

    assert any("_" in name for name in task.vocabulary)
    ids = task.clip_tokenizer(task.vocabulary, padding=True, return_tensors="pt")
    with torch.no_grad():
        feats = full.get_text_features(**ids)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        raw = torch.nn.functional.normalize(feats.float(), dim=-1)
    assert torch.allclose(task.attr_features, raw, atol=1e-5)
    assert attribute_texts(["christmas_tree"], "spaces") == ["christmas tree"]


def test_text_encoder_gradient_checkpointing_recomputes_its_layers(setup_dirs):
    counts, shared = {}, None
    for flag in ("false", "true"):
        task, batch = _probe(setup_dirs, f"ckpt-{flag}", f"model.text_encoder_gradient_checkpointing={flag}")
        if shared is None:
            shared = (batch, task.model.state_dict())
        batch = shared[0]
        task.model.load_state_dict(shared[1])
        calls = []
        # the first module of the first layer: it runs again when the backward pass recomputes the layer
        # (torch stops recomputing once it has every saved tensor, so a later module may not run again)
        layer = next(m for m in task.pipe.text_encoder.modules() if type(m).__name__ == "CLIPEncoderLayer")
        layer.layer_norm1.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        torch.manual_seed(0)
        loss, _ = task.loss(task.model, batch)
        loss.backward()
        counts[flag] = (len(calls), [p.grad.clone() for p in task.model.parameters()])
    assert counts["false"][0] == 1 and counts["true"][0] == 2  # forward, then recomputed in backward
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(counts["false"][1], counts["true"][1]))


def test_encoder_model_folder_and_its_space_identity(setup_dirs):
    """model.emotion_encoder may name RUN/final/model; the space records the encoder that made it, and a
    space from another encoder is refused unless model.allow_foreign_space."""
    from emocli.emotion_space import EmotionSpace
    from emocli.errors import EmoError
    from emocli.methods.emogen.train import EmoGenTask
    from emocli.methods.emotion_encoder.model import EmotionEncoder

    encoder = setup_dirs["encoder"]
    fingerprint = EmotionEncoder.from_pretrained(encoder).fingerprint()
    assert EmotionSpace.load(encoder / "final").encoder == fingerprint
    recipe = _recipe(setup_dirs, setup_dirs["root"] / "final-model", f"model.emotion_encoder={encoder / 'final' / 'model'}")
    task = EmoGenTask(recipe, prepare_run(recipe, ["t"]))
    assert task.model.config["encoder"] == fingerprint
    assert torch.equal(task.space.mean, EmotionSpace.load(encoder / "final").mean)

    from tests.conftest import shared_path

    official = str(shared_path("data", "emogen-official", "emo_space"))
    foreign = _recipe(setup_dirs, setup_dirs["root"] / "foreign", f"model.emotion_space={official}")
    with pytest.raises(EmoError, match="model.allow_foreign_space=true"):
        EmoGenTask(foreign, prepare_run(foreign, ["t"]))


def test_training_reduces_the_loss_and_the_run_samples(setup_dirs, tmp_path):
    from accelerate import Accelerator

    from emocli.methods.emogen.mapper import Mapper
    from emocli.methods.emogen.train import EmoGenTask
    from emocli.worker import run_method

    out = setup_dirs["root"] / "train"
    recipe = _recipe(setup_dirs, out, "train.max_steps=40", "train.log_every=5", "data.cache_latents=true",
                     "optim.lr=3.0e-3")
    run_method(prepare_run(recipe, ["test"]).dir, False)
    assert (out / "final" / "model" / "mapper.safetensors").is_file()
    assert (out / "final" / "emotion_space.safetensors").is_file()
    assert list((out / "samples").glob("step-*.png"))  # validation images during training

    # The same batch, noise and timesteps: the trained mapper's loss is below the initial one's.
    task = EmoGenTask(_recipe(setup_dirs, setup_dirs["root"] / "probe"), prepare_run(
        _recipe(setup_dirs, setup_dirs["root"] / "probe"), ["t"]))
    task.setup(Accelerator(cpu=True))
    batch = torch.utils.data.default_collate([task.train_dataset[i] for i in range(32)])
    torch.manual_seed(recipe.run.seed)
    initial = Mapper(**Mapper.from_pretrained(out / "final" / "model").config)
    losses = {}
    for name, mapper in {"initial": initial, "trained": Mapper.from_pretrained(out / "final" / "model")}.items():
        torch.manual_seed(123)
        with torch.no_grad():
            losses[name] = task.loss(mapper, batch)[0].item()
    assert losses["trained"] < losses["initial"], losses

    done = run_emo("sample", "--run", str(out), "--emotion", "fear", "--object", "cup", "--n", "2",
                   "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "s" / "fear").glob("*.png"))) == 2


def test_resume_continues_at_the_same_step(setup_dirs):
    from emocli.worker import run_method

    out = setup_dirs["root"] / "resume"
    run_method(prepare_run(_recipe(setup_dirs, out, "train.max_steps=6", "train.checkpoint_every=3"), ["t"]).dir, False)
    assert latest_checkpoint(out).name == "step-6"
    run_method(prepare_run(_recipe(setup_dirs, out, "train.max_steps=9", "train.checkpoint_every=3"), ["t"],
                           resume=True).dir, True)
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and "step 6" in log
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == sorted(steps) and steps[-1] == 9
    assert latest_checkpoint(out).name == "step-9"
    assert "loaded from" in log  # emotion vectors came from the run's cache, not recomputed


def test_not_prepared_folder_is_one_line_exit_2(setup_dirs, tmp_path):
    done = run_emo("train", "emogen", "tiny/emogen", f"data.prepared={tmp_path}", f"run.output_dir={tmp_path / 'r'}",
                   f"model.emotion_encoder={setup_dirs['encoder']}")
    assert done.returncode == 2 and "prepare" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_two_process_emogen_run(setup_dirs):
    """EmoGen through `accelerate launch` on 2 CPU processes: emotion vectors computed on disjoint shards
    and gathered, rank 0 alone writes checkpoints, validation images and the final run."""
    d = setup_dirs
    out = d["root"] / "ddp"
    done = run_emo("train", "emogen", "tiny/emogen", f"model.pretrained={d['models']['sd']}",
                   f"model.clip={d['models']['clip']}", f"model.emotion_encoder={d['encoder']}",
                   f"data.prepared={d['prepared']}", f"run.output_dir={out}", "train.max_steps=4",
                   "train.checkpoint_every=2", "--num-processes", "2", "--accelerate-config", "multi_cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "accelerate: MULTI_CPU, 2 process(es)" in log and log.count("checkpoint:") == 2
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from emocli.methods.emogen.train import EmoGenTask

    cached = load_file(str(out / "cache" / "emogen_precomputed.safetensors"))["vectors"]
    recipe = _recipe(d, d["root"] / "ddp-reference")
    task = EmoGenTask(recipe, prepare_run(recipe, ["t"]))
    task.setup(Accelerator(cpu=True))  # the same vectors computed by one process
    single = task.train_dataset.vectors
    assert cached.shape == single.shape and torch.allclose(cached, single, atol=1e-4)
    assert (out / "final" / "emogen.json").is_file()
