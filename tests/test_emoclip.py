"""EmoCLIP on the tiny CLIP: contrastive learning works and the text encoder plugs into EmoGen."""

from __future__ import annotations

import json

import torch

from emocli.recipes.load import load_recipe
from emocli.runs import prepare_run


def test_emoclip_trains_and_plugs_into_emogen(emoset_tiny, tmp_path):
    from transformers import CLIPTextModel

    from emocli.data.prepare import prepare_emoset
    from emocli.methods.emoclip.train import EmoClipTask
    from emocli.methods.emogen.sample import load_sd_pipeline
    from emocli.testing.tiny import make_tiny
    from emocli.worker import run_method

    models = make_tiny(tmp_path / "models", which=("sd", "clip"))
    prepared = prepare_emoset(str(emoset_tiny), tmp_path / "prepared")
    captions = tmp_path / "captions.json"
    records = [json.loads(x) for x in (prepared / "records.jsonl").read_text().splitlines()]
    captions.write_text(json.dumps({r["id"]: f"picture number {i}" for i, r in enumerate(records)}))
    out = tmp_path / "emoclip"
    recipe = load_recipe("tiny/emoclip", [f"model.pretrained={models['clip']}", f"data.prepared={prepared}",
                                          f"data.captions={captions}", f"run.output_dir={out}",
                                          "train.max_steps=30", "train.log_every=5", "optim.lr=3.0e-3"])
    run_method(prepare_run(recipe, ["test"]).dir, False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0], losses
    task = EmoClipTask(recipe, prepare_run(recipe.model_copy(update={"run": recipe.run.model_copy(
        update={"output_dir": str(tmp_path / "probe")})}), ["t"]))
    assert task.train_dataset is not None
    assert "picture number" in task.tokenizer.decode(task.train_dataset.input_ids[0], skip_special_tokens=True)

    # The vision tower did not move; the text tower did.
    from transformers import CLIPModel

    before, after = CLIPModel.from_pretrained(models["clip"]), CLIPModel.from_pretrained(out / "final" / "model")
    assert torch.equal(before.vision_model.embeddings.patch_embedding.weight,
                       after.vision_model.embeddings.patch_embedding.weight)
    assert not torch.equal(before.text_projection.weight, after.text_projection.weight)

    text_encoder = CLIPTextModel.from_pretrained(out / "final" / "text_encoder")
    assert torch.equal(text_encoder.get_input_embeddings().weight, after.text_model.get_input_embeddings().weight)
    pipe = load_sd_pipeline(str(models["sd"]), text_encoder=str(out / "final" / "text_encoder"))
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, text_encoder.get_input_embeddings().weight)


def test_gradient_checkpointing_runs(emoset_prepared, tmp_path):
    """from_pretrained returns CLIP in eval mode, where transformers skips checkpointing: the loop's
    train mode makes `model.gradient_checkpointing=true` recompute every text layer in backward."""
    from emocli.methods.emoclip.train import EmoClipTask
    from emocli.testing.tiny import make_tiny
    from emocli.training import fit, make_accelerator

    models = make_tiny(tmp_path / "models", which=("clip",))
    recipe = load_recipe("tiny/emoclip", [f"model.pretrained={models['clip']}", f"data.prepared={emoset_prepared}",
                                          f"run.output_dir={tmp_path / 'run'}", "model.gradient_checkpointing=true",
                                          "train.max_steps=1", "train.trackers=[]", "data.max_samples=8",
                                          "train.batch_size=4"])
    run = prepare_run(recipe, ["test"])
    task = EmoClipTask(recipe, run)
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in task.clip.text_model.modules()
              if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    assert layers, "gradient_checkpointing_enable() marked no layer"
    calls = []
    for layer in layers:
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _inner=inner, **k: calls.append(1) or _inner(*a, **k)
    fit(task, run, make_accelerator(run))
    assert len(calls) == len(layers)  # one checkpointed forward per layer in the one training step
