"""GRPO at real scale, without a GPU: what `model.freeze_vision` freezes on the real Qwen2.5-VL architecture
(tiny, from config) and on LLaVA, LoRA placement, `grpo.extra` checked against TRL's GRPOConfig, misleading
suggestions that are sometimes right, confusable binary "no" candidates, and the shipped real recipes' settings.
The training runs (bf16 base + LoRA, fp32 full weights, eval during training) are in test_grpo_train.py."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter

import pytest

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.recipes.load import load_recipe


@pytest.fixture(scope="module")
def qwen():
    from emocli.testing.tiny import tiny_qwen2_5_vl

    return tiny_qwen2_5_vl()


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["all", "encoder", "none"])
def test_freeze_vision_on_qwen2_5_vl(mode):
    from emocli.methods.grpo.train import freeze_vision
    from emocli.testing.tiny import tiny_qwen2_5_vl

    model, _, _ = tiny_qwen2_5_vl()
    names = [n for n, _ in model.named_parameters()]
    merger = {n for n in names if n.startswith("model.visual.merger.")}
    encoder = {n for n in names if n.startswith("model.visual.") and n not in merger}
    language = {n for n in names if not n.startswith("model.visual.")}
    assert merger and encoder and language
    info = freeze_vision(model, mode)
    trainable = _trainable(model)
    expected = {"all": language, "encoder": language | merger, "none": language | merger | encoder}[mode]
    assert trainable == expected
    if mode != "none":
        assert info["tower"] == "model.visual" and info["projector"] == "model.visual.merger"
        frozen = encoder | (merger if mode == "all" else set())
        assert info["frozen"] == sum(p.numel() for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("mode", ["all", "encoder"])
def test_freeze_vision_on_llava(mode):
    from emocli.methods.grpo.train import freeze_vision
    from emocli.testing.tiny import tiny_vlm

    model, _ = tiny_vlm()
    info = freeze_vision(model, mode)
    trainable = _trainable(model)
    assert info["tower"] == "model.vision_tower" and info["projector"] == "model.multi_modal_projector"
    assert not any(n.startswith("model.vision_tower.") for n in trainable)
    projector = any(n.startswith("model.multi_modal_projector.") for n in trainable)
    assert projector == (mode == "encoder")
    assert any(n.startswith("model.language_model.") for n in trainable)


def test_qwen_trains_with_our_preprocessing_and_the_frozen_encoder_gets_no_gradient(qwen):
    """Forward, loss and backward of the tiny Qwen2.5-VL on images preprocessed without torchvision (the
    image processor's PIL backend + our expansion of <|image_pad|>); with freeze_vision=encoder the merger
    gets gradients, the encoder blocks none."""
    import numpy as np
    import torch
    from PIL import Image

    from emocli.methods.grpo.train import freeze_vision
    from emocli.testing.tiny import qwen_inputs, tiny_qwen2_5_vl

    model, tokenizer, image_processor = tiny_qwen2_5_vl()
    freeze_vision(model, "encoder")
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which emotion?"}]}]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 80), (40, 40))]
    batch = qwen_inputs(tokenizer, image_processor, [conv, conv], images)
    # 80x64 px -> a 4x6 grid of 14 px patches (resized to multiples of 28) -> 6 merged tokens; 40x40 -> 4
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 4]]
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (batch["input_ids"] == pad).sum(1).tolist() == [6, 4]
    model.train()
    out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n.startswith("model.visual.blocks."))
    assert grads["model.visual.merger.mlp.0.weight"].abs().sum() > 0
    assert grads["model.language_model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0


@pytest.mark.parametrize("mode", ["all", "encoder"])
def test_lora_on_qwen_stays_out_of_the_vision_tower(mode):
    """Qwen2.5-VL's vision MLPs are also called gate/up/down_proj: no adapter goes into `visual`; with
    freeze_vision=encoder the merger trains whole (modules_to_save), with all it stays frozen."""
    from peft import get_peft_model

    from emocli.methods.grpo.train import freeze_vision, lora_config
    from emocli.testing.tiny import tiny_qwen2_5_vl

    model, _, _ = tiny_qwen2_5_vl()
    assert any(n.startswith("model.visual.blocks.0.mlp.gate_proj") for n, _ in model.named_parameters())
    recipe = load_recipe("grpo", ["data.prepared=/nowhere", f"model.freeze_vision={mode}"])
    peft = get_peft_model(model, lora_config(recipe, freeze_vision(model, mode)))
    trainable = _trainable(peft)
    adapters = {n for n in trainable if "lora_" in n}
    assert adapters and all(".visual." not in n for n in adapters)
    targets = set(recipe.model.lora.target_modules)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == targets  # all seven, LM only
    merger = {n for n in trainable if ".visual.merger." in n}
    assert bool(merger) == (mode == "encoder")
    assert trainable - adapters == merger


def test_grpo_extra_is_checked_against_grpo_config(tmp_path):
    from emocli.methods.grpo.train import grpo_config_kwargs, reward_functions

    recipe = load_recipe("tiny/grpo", ["grpo.extra={num_generations_eval: 2, mask_truncated_completions: true}"])
    funcs, weights = reward_functions(recipe)
    kwargs = grpo_config_kwargs(recipe, tmp_path, weights)
    assert kwargs["num_generations_eval"] == 2 and kwargs["mask_truncated_completions"] is True
    for extra, message in (("{mask_truncated_completion: true}", "not a field of TRL's GRPOConfig.*did you mean"),
                           ("{beta: 0.1}", "set it as grpo.beta"),
                           ("{output_dir: /tmp/x}", "set by the run itself")):
        bad = load_recipe("tiny/grpo", [f"grpo.extra={extra}"])
        with pytest.raises(EmoError, match=message):
            grpo_config_kwargs(bad, tmp_path, weights)


def test_grpo_extra_typo_fails_before_the_run_directory(tmp_path):
    from typer.testing import CliRunner

    from emocli.cli import app

    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["understand", "grpo", "tiny/grpo", f"run.output_dir={out}",
                                    "grpo.extra={num_generation_eval: 2}"])
    assert isinstance(done.exception, EmoError) and "num_generation_eval" in str(done.exception)
    assert not out.exists()


def _records(per_emotion: int) -> list[dict]:
    return [{"id": f"{e}_{k:03d}", "emotion": e, "image": f"/x/{e}_{k}.jpg"}
            for e in EMOSET.labels for k in range(per_emotion)]


@pytest.mark.parametrize("right", [0.0, 0.25, 0.5, 1.0])
def test_misleading_suggestion_is_right_with_the_recipe_share(right):
    from emocli.methods.grpo.questions import misleading_questions

    records = _records(40)
    qs = misleading_questions(records, seed=3, right=right)
    accepted = [q for q in qs if q["candidate"] == q["emotion"]]
    assert len(accepted) in (math.floor(right * len(qs)), math.ceil(right * len(qs)))
    assert all(q["answer"] == q["emotion"] for q in qs)  # the gold is always the true emotion
    per_emotion = Counter(q["emotion"] for q in accepted)
    for e in EMOSET.labels:  # spread over the emotions: 40 x right each, give or take one
        assert abs(per_emotion[e] - 40 * right) <= 1
    agree = sum(EMOSET.polarity(q["candidate"]) == EMOSET.polarity(q["emotion"]) for q in qs)
    # the suggestion's polarity agrees with the truth half of the time (up to right = 1/2; above, it must leak)
    assert abs(agree - max(len(qs) / 2, len(accepted))) <= 8


def test_misleading_right_default_comes_from_the_recipe():
    from emocli.methods.grpo.config import GrpoDataSection
    from emocli.methods.grpo.questions import MISLEADING_RIGHT, build_questions

    assert GrpoDataSection.model_fields["misleading_right"].default == MISLEADING_RIGHT == 0.125
    assert load_recipe("grpo").data.misleading_right == 0.125
    built = build_questions({"train": _records(8)}, types=("misleading",), seed=0, misleading_right=0.5)["train"]
    assert sum(q["candidate"] == q["emotion"] for q in built) == 32
    with pytest.raises(EmoError, match="in \\[0, 1\\]"):
        build_questions({"train": _records(1)}, misleading_right=1.5)


def test_binary_no_candidates_come_from_confusable_emotions():
    from emocli.methods.grpo.questions import binary_questions

    # fear is confused with sadness 3x as often as with anger; awe only with contentment
    confusion = {"fear": {"fear": 50, "sadness": 30, "anger": 10}, "awe": {"awe": 10, "contentment": 5}}
    qs = binary_questions(_records(200), seed=1, confusion=confusion)
    no = {e: Counter(q["candidate"] for q in qs if q["answer"] == "no" and q["emotion"] == e) for e in EMOSET.labels}
    assert set(no["fear"]) == {"sadness", "anger"} and sum(no["fear"].values()) == 100
    # weighted 3:1, drawn from a pool that names each emotion as often as the "yes" questions do
    assert no["fear"]["sadness"] > 1.5 * no["fear"]["anger"]
    assert set(no["awe"]) == {"contentment"}
    for e in EMOSET.labels:  # P(yes | named emotion) = 1/2 whatever the confusion matrix
        c = Counter(q["answer"] for q in qs if q["candidate"] == e)
        assert abs(c["yes"] - c["no"]) <= 1
    assert len(no["amusement"]) >= 5  # no confusion row: uniform over the other seven
    plain = binary_questions(_records(200), seed=1)
    assert len({q["candidate"] for q in plain if q["answer"] == "no" and q["emotion"] == "fear"}) == 7


def test_real_recipes_lora_on_bf16_and_full_in_fp32_with_bf16_autocast():
    lora, full = load_recipe("grpo"), load_recipe("grpo-full")
    assert lora.model.dtype == "bfloat16" and lora.model.lora is not None and lora.model.freeze_vision == "all"
    assert 5e-6 <= lora.grpo.learning_rate <= 2e-5 and lora.grpo.bf16
    assert full.model.dtype == "float32" and full.model.lora is None and full.grpo.bf16
    assert full.launch.mixed_precision == "bf16" and full.model.freeze_vision == "encoder"
    for recipe in (lora, full):
        assert recipe.grpo.max_steps and recipe.grpo.eval_every and recipe.grpo.eval_questions
    for name in ("grpo", "grpo-full"):
        header = open(f"recipes/{name}.yaml").read().split("method:")[0]
        assert "Memory, ESTIMATED" in header and "not measured" in header and "GB" in header


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="Qwen2.5-VL's full processor needs torchvision (run once in a venv that has it)")
def test_grpo_on_tiny_qwen2_5_vl_with_its_full_processor(tmp_path, emoset_tiny):
    """Two GRPO steps of the tiny Qwen2.5-VL with LoRA through the real CLI and its real processor."""
    import json

    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import save_tiny_qwen2_5_vl
    from tests.conftest import run_emo

    model = save_tiny_qwen2_5_vl(tmp_path / "qwen")
    prepared = prepare_emoset(str(emoset_tiny), tmp_path / "prepared")
    out = tmp_path / "run"
    done = run_emo("understand", "grpo", "tiny/grpo", f"model.pretrained={model}", f"data.prepared={prepared}",
                   f"run.output_dir={out}", "grpo.max_steps=2", "model.freeze_vision=encoder", "grpo.eval_every=2", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "final" / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["lora"] is True
    moved = summary["trainable_tensors"]
    assert moved["language_model_changed"] >= moved["language_model_tensors"] / 2
    assert any("eval_reward" in json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines())


def _ram_gib() -> float:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="Qwen2.5-VL's processor needs torchvision")
@pytest.mark.parametrize("name", ["grpo", "grpo-full"])
def test_real_recipe_smoke_full_size_qwen2_5_vl_3b_random_weights(name, tmp_path, emoset_tiny):
    """The real recipes' model settings on the full-size Qwen2.5-VL-3B architecture (random weights, the tiny
    tokenizer), 2 steps on CPU with short generations. Needs ~40 GB of free RAM (grpo-full: fp32 weights,
    gradients and Adam states of 3B parameters); NOT run on the 24 GB development machine."""
    import json

    if _ram_gib() < 40:
        pytest.skip(f"{_ram_gib():.0f} GiB of free RAM; the full-size smoke run needs ~40")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import save_tiny_qwen2_5_vl
    from tests.conftest import run_emo

    folder = save_tiny_qwen2_5_vl(tmp_path / "qwen")  # processor + tokenizer; the model is replaced below
    tiny = json.loads((folder / "config.json").read_text())
    config = Qwen2_5_VLConfig(  # Qwen/Qwen2.5-VL-3B-Instruct's published sizes
        text_config={"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                     "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
                     "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "tie_word_embeddings": True,
                     "eos_token_id": tiny["text_config"]["eos_token_id"],
                     "pad_token_id": tiny["text_config"]["pad_token_id"]},
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
        image_token_id=tiny["image_token_id"], video_token_id=tiny["video_token_id"],
        vision_start_token_id=tiny["vision_start_token_id"], vision_end_token_id=tiny["vision_end_token_id"])
    real = load_recipe(name)
    Qwen2_5_VLForConditionalGeneration(config).to(getattr(__import__("torch"), real.model.dtype)).save_pretrained(folder)
    prepared = prepare_emoset(str(emoset_tiny), tmp_path / "prepared")
    out = tmp_path / "run"
    done = run_emo("understand", "grpo", name, f"model.pretrained={folder}", f"data.prepared={prepared}",
                   f"run.output_dir={out}", "grpo.max_steps=2", "grpo.bf16=false", "grpo.num_generations=2",
                   "grpo.per_device_train_batch_size=2", "grpo.gradient_accumulation_steps=1",
                   "grpo.max_completion_length=8", "grpo.eval_every=null", "grpo.report_to=[]", "rewards.length=0.1",
                   "data.max_train=4", "data.max_eval=2", "model.attn_implementation=eager", timeout=7200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "final" / "train_summary.json").read_text())["global_step"] == 2


def test_eval_batch_rule_and_breaking_extra_keys_are_refused_before_the_run():
    from pydantic import ValidationError

    from emocli.methods.grpo.config import GrpoSection, check_generation_batch

    # the review's reproduction: 4 per device, 8 generations, eval every 2 steps
    g = GrpoSection(num_generations=8, per_device_train_batch_size=4, gradient_accumulation_steps=2, eval_every=2)
    with pytest.raises(ValueError, match="evaluation group size 8"):
        check_generation_batch(g, 1)
    check_generation_batch(g.model_copy(update={"extra": {"num_generations_eval": 4}}), 1)
    check_generation_batch(g.model_copy(update={"eval_every": None}), 1)
    check_generation_batch(g, 2)  # 4 x 2 processes = 8
    for key in ("remove_unused_columns", "save_only_model", "push_to_hub", "hub_model_id", "use_cpu"):
        with pytest.raises(ValidationError, match=f"grpo.extra.{key} is refused"):
            GrpoSection(extra={key: True})
    GrpoSection(extra={"mask_truncated_completions": True})
