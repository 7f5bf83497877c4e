"""`emo understand grpo` / `predict` and `emo eval understanding` on the tiny LLaVA, CPU.

A random model never writes <answer> tags, so the task rewards are all 0; the tiny recipe's small length
reward gives the groups variance, so the weights move. The run is made once (2 steps, checkpoint at 2) and
shared: weights, logged rewards, saved questions, resume (bit-exact against an uninterrupted run), predict,
and the base-vs-tuned evaluation on the run's own test questions.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.recipes.load import load_recipe
from tests.conftest import run_emo


def _why(done) -> str:
    lines = done.stderr.splitlines()
    keep = [x for x in lines if "Error" in x or "error:" in x or "rank1" in x]
    return "\n".join(keep[-40:]) + "\n---\n" + "\n".join(lines[-25:])


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _train_rows(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in _rows(run) if "reward" in r}


def emo_in_process(*args: str):
    """The `emo` command in this process (no interpreter start-up): typer's CliRunner result."""
    from typer.testing import CliRunner

    from emocli.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def tiny(emoset_tiny, tmp_path_factory) -> dict:
    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("grpo")
    models = make_tiny(root / "models", which=("vlm",))
    prepared = prepare_emoset(str(emoset_tiny), root / "prepared")
    return {"root": root, "vlm": models["vlm"], "prepared": prepared}


def grpo_args(tiny: dict, out: Path, *extra: str) -> list[str]:
    return ["understand", "grpo", "tiny/grpo-full", f"model.pretrained={tiny['vlm']}",
            f"data.prepared={tiny['prepared']}", f"run.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def run2(tiny) -> Path:
    """A finished 2-step tiny GRPO run (checkpoint-2), through the real CLI."""
    out = tiny["root"] / "run2"
    done = run_emo(*grpo_args(tiny, out, "grpo.max_steps=2"))
    assert done.returncode == 0, _why(done)
    return out


def test_grpo_trains_changes_weights_and_logs_rewards(tiny, run2):
    import torch
    from transformers import AutoModelForImageTextToText

    assert (run2 / "recipe.yaml").is_file() and (run2 / "versions.json").is_file()
    assert load_recipe(run2 / "recipe.yaml").method == "grpo"
    assert (run2 / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()
    summary = json.loads((run2 / "final" / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["lora"] is False

    before = AutoModelForImageTextToText.from_pretrained(tiny["vlm"]).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(run2 / "final" / "model").state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)  # model.freeze_vision: encoder
    assert any("multi_modal_projector" in k for k in changed)  # ... the projector trains

    rows = _train_rows(run2)
    assert sorted(rows) == [1, 2]
    assert all(r["reward_std"] > 0 for r in rows.values())  # the groups have variance, so there is a gradient
    assert rows[1]["reward"] != rows[2]["reward"]
    assert all("rewards/accuracy_reward/mean" in r and "rewards/length_reward/mean" in r for r in rows.values())
    assert rows[2]["kl"] > 0  # the policy moved away from the reference
    log = (run2 / "log.txt").read_text()
    assert "model.freeze_vision=encoder: froze" in log and "GRPO: 96 training questions" in log
    # the plan, from TRL's own step count: 8 completions per step = 2 questions x 4 generations
    assert "planned 2 optimizer steps x 2 questions (8 completions, 4 per question) = 4 question draws of 96" in log
    moved = summary["trainable_tensors"]
    assert moved["language_model_changed"] >= moved["language_model_tensors"] / 2 > 0


def test_saved_questions_are_image_disjoint_and_balanced(run2):
    sets = {s: _read_jsonl(run2 / "questions" / f"{s}.jsonl") for s in ("train", "val", "test")}
    assert [len(sets[s]) for s in ("train", "val", "test")] == [96, 24, 24]  # 32 / 8 / 8 images x 3 types
    images = {s: {q["image"] for q in qs} for s, qs in sets.items()}
    ids = {s: {q["image_id"] for q in qs} for s, qs in sets.items()}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not images[a] & images[b] and not ids[a] & ids[b], (a, b)
    assert all(Path(p).is_file() for p in images["test"])
    summary = json.loads((run2 / "questions" / "summary.json").read_text())
    assert set(summary["summary"]["overlap"].values()) == {0}
    for qs in sets.values():
        answers = [q["answer"] for q in qs if q["qtype"] == "binary"]
        assert abs(answers.count("yes") - answers.count("no")) <= 1
        misleading = [q for q in qs if q["qtype"] == "misleading"]
        right = sum(q["candidate"] == q["emotion"] for q in misleading)
        share = load_recipe(run2 / "recipe.yaml").data.misleading_right  # 0.125 in the recipes
        assert 0 < share < 0.5
        assert math.floor(len(misleading) * share) <= right <= math.ceil(len(misleading) * share)
        assert {q["qtype"] for q in qs} == {"binary", "multiple_choice", "misleading"}
    # the capped train split keeps every emotion
    assert {q["emotion"] for q in sets["train"]} == set(EMOSET.labels)


def test_existing_checkpoints_need_resume(tiny, run2):
    done = run_emo(*grpo_args(tiny, run2, "grpo.max_steps=2"))
    assert done.returncode == 2 and "--resume" in done.stderr and "Traceback" not in done.stderr


def test_resume_continues_from_the_trl_checkpoint_bit_exact(tiny, run2):
    import torch
    from transformers import AutoModelForImageTextToText

    resumed = tiny["root"] / "resumed"
    shutil.copytree(run2, resumed)
    done = emo_in_process(*grpo_args(tiny, resumed, "grpo.max_steps=4"), "--resume")
    assert done.exit_code == 0, done.output
    log = (resumed / "log.txt").read_text()
    assert "resuming from checkpoint-2" in log and "resumed the weights of" in log
    state = json.loads((resumed / "trainer" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    rows = _train_rows(resumed)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[3]["kl"] > 0  # restarted from the checkpoint, not from the initial weights

    straight = tiny["root"] / "straight"
    done = emo_in_process(*grpo_args(tiny, straight, "grpo.max_steps=4"))
    assert done.exit_code == 0, done.output
    ref = _train_rows(straight)
    for step in (3, 4):
        for key in ("loss", "reward", "kl"):
            assert rows[step][key] == pytest.approx(ref[step][key], rel=1e-4, abs=1e-7), (step, key)
    a = AutoModelForImageTextToText.from_pretrained(resumed / "final" / "model").state_dict()
    b = AutoModelForImageTextToText.from_pretrained(straight / "final" / "model").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_predict_prints_an_emotion(tiny, run2):
    from emocli.methods.grpo.evaluate import predict

    image = _read_jsonl(run2 / "questions" / "test.jsonl")[0]["image"]
    done = run_emo("understand", "predict", "--image", image, "--run", str(run2))
    assert done.returncode == 0, _why(done)
    assert done.stdout.strip() in EMOSET.labels
    done = emo_in_process("understand", "predict", "--image", image, "--model", str(tiny["vlm"]), "--verbose")
    assert done.exit_code == 0, done.output
    lines = done.stdout.strip().splitlines()
    assert lines[0] in EMOSET.labels
    assert any(x.startswith("reply: ") for x in lines) and any(x.startswith("options: A. ") for x in lines)
    # a random model names no emotion: the lettered answers were ranked by likelihood
    assert any("ranked by log-likelihood" in x for x in lines)
    with pytest.raises(EmoError, match="nope.jpg"):
        predict(tiny["root"] / "nope.jpg", run=run2)
    with pytest.raises(EmoError, match="exactly one of"):
        predict(image)


def test_eval_understanding_base_vs_tuned_on_the_run_test_questions(tiny, run2):
    out = tiny["root"] / "eval"
    done = run_emo("eval", "understanding", "tiny/eval-understanding", f"models.base={tiny['vlm']}",
                   f"models.tuned={run2}", f"run.output_dir={out}")
    assert done.returncode == 0, _why(done)
    metrics = json.loads((out / "metrics.json").read_text())
    test_questions = _read_jsonl(run2 / "questions" / "test.jsonl")
    assert _read_jsonl(out / "questions.jsonl") == test_questions  # exactly the run's test questions
    assert metrics["questions"]["n"] == len(test_questions) == 24
    assert set(metrics["models"]) == {"base", "tuned"}
    for name in ("base", "tuned"):
        m = metrics["models"][name]["metrics"]
        assert set(m["accuracy"]) == {"binary", "multiple_choice", "misleading", "all"}
        assert m["eight_class"]["n"] == 8 and 0 <= m["eight_class"]["macro_f1"] <= 1
        assert 0 <= m["polarity"] <= 1
        predictions = _read_jsonl(out / f"predictions_{name}.jsonl")
        assert [p["image_id"] for p in predictions] == [q["image_id"] for q in test_questions]
        assert (out / f"confusion_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        confusion = json.loads((out / f"confusion_{name}.json").read_text())
        assert len(confusion["matrix"]) == 8 and sum(map(sum, confusion["matrix"])) + sum(confusion["no_answer"]) == 8
    assert metrics["models"]["tuned"]["model"] == str(run2 / "final" / "model")
    report = (out / "report.md").read_text()
    assert "| metric | base | tuned | tuned - base |" in report and "8-class macro-F1" in report
    assert "confusion_base.png" in report and "confusion_tuned.png" in report
    # text-only baselines in every report, scored like the models
    assert set(metrics["blind"]) == {"echo", "polarity", "class_prior", "constant"}
    assert set(metrics["blind"]["echo"]["accuracy"]) == {"binary", "multiple_choice", "misleading", "all"}
    assert "Blind baselines" in report and "| metric | echo | polarity | class prior | constant |" in report
    html = (out / "report.html").read_text()  # the shared report module: HTML with the plots embedded
    assert "tuned - base" in html and "data:image/png;base64," in html


def test_score_on_hand_written_replies():
    from emocli.methods.grpo.evaluate import score
    from emocli.methods.grpo.questions import build_questions

    records = [{"id": f"{e}_{k}", "emotion": e, "image": f"/x/{e}_{k}.jpg"} for e in EMOSET.labels for k in range(2)]
    qs = build_questions({"test": records}, seed=0, misleading_right=0.0)["test"]
    replies = []
    for q in qs:
        if q["qtype"] == "binary":
            replies.append("<answer>yes</answer>")  # right on the "yes" half only
        elif q["qtype"] == "multiple_choice":
            # right for the first image of each emotion; the second names fear (no tags: still mapped)
            replies.append(f"<answer>{q['answer']}</answer>" if q["image_id"].endswith("_0") else "fear")
        else:
            replies.append(f"<answer>{q['candidate']}</answer>")  # always accepts the suggestion
    m = score(qs, replies)
    assert m["accuracy"]["binary"] == pytest.approx(0.5)
    assert m["accuracy"]["multiple_choice"] == pytest.approx(0.5)  # "fear" without tags fails the reward's rule
    assert m["accuracy"]["misleading"] == 0.0
    assert m["binary_yes_rate"] == 1.0 and m["misleading_accepted"] == 1.0
    ec = m["eight_class"]
    assert ec["n"] == 16 and ec["no_answer"] == 0.0
    assert ec["accuracy"] == pytest.approx(9 / 16)  # 8 right + the second fear image
    assert ec["confusion"]["matrix"][EMOSET.index("anger")][EMOSET.index("fear")] == 1
    assert ec["per_class_f1"]["fear"] == pytest.approx(4 / 11)  # precision 2/9 (7 others said fear), recall 1
    assert m["format"] == pytest.approx((16 + 8 + 16) / 48)
    # half the misleading suggestions have the true polarity (leak-free questions); MC: 8 right + fear on negatives
    assert m["polarity_types"] == ["multiple_choice", "misleading"]
    assert m["polarity"] == pytest.approx((8 + 4 + 8) / 32)


def _real_settings(name: str) -> list[str]:
    """Overrides that give the tiny twin the real recipe's precision, LoRA, freezing and learning rate."""
    real = load_recipe(name)
    lora = "null" if real.model.lora is None else json.dumps(real.model.lora.model_dump(mode="json"))
    return [f"model.dtype={real.model.dtype}", f"model.lora={lora}", f"model.freeze_vision={real.model.freeze_vision}",
            f"grpo.learning_rate={real.grpo.learning_rate}", f"grpo.lr_scheduler_type={real.grpo.lr_scheduler_type}",
            "grpo.warmup_steps=0", "grpo.bf16=false"]  # no bf16 autocast on CPU


def test_grpo_yaml_settings_on_a_bf16_base_move_the_language_model_and_evaluate_on_val(tiny):
    """recipes/grpo.yaml's LoRA, freezing and lr on the tiny model loaded in bfloat16 (grpo.bf16=false on CPU):
    after 2 steps at least half of the trainable language-model tensors changed (full weights in bf16 at lr
    1e-6, the old real recipe, changed 1.3%). The adapters are fp32, none is in the vision tower, and the
    validation questions are evaluated during training (grpo.eval_every)."""
    from safetensors import safe_open

    from emocli.runs import prepare_run
    from emocli.worker import run_method

    out = tiny["root"] / "lora"
    recipe = load_recipe("tiny/grpo", [f"model.pretrained={tiny['vlm']}", f"data.prepared={tiny['prepared']}",
                                       f"run.output_dir={out}", "grpo.max_steps=2", "grpo.eval_every=2",
                                       "grpo.eval_questions=8", *_real_settings("grpo")])
    assert recipe.model.dtype == "bfloat16" and recipe.model.lora.r == 64
    run_method(prepare_run(recipe, ["test"]).dir, False)
    summary = json.loads((out / "final" / "train_summary.json").read_text())
    moved = summary["trainable_tensors"]
    assert summary["lora"] is True and moved["tensors"] == moved["language_model_tensors"] == 28
    assert moved["language_model_changed"] >= moved["language_model_tensors"] / 2
    with safe_open(str(out / "final" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        adapters = {k: f.get_tensor(k) for k in f.keys()}
    # q/k/v_proj exist in the CLIP vision tower too: only the 2 language layers x 7 modules get adapters
    assert len(adapters) == 28 and all("language_model" in k for k in adapters)
    assert {str(t.dtype) for t in adapters.values()} == {"torch.float32"}
    assert all(t.abs().sum() > 0 for k, t in adapters.items() if "lora_B" in k)  # B starts at zero
    assert (out / "final" / "model" / "model.safetensors").is_file()  # merged, loads without PEFT
    evals = [r for r in _rows(out) if "eval_reward" in r]
    assert [r["step"] for r in evals] == [2]


def test_grpo_full_yaml_settings_move_the_fp32_language_model(tiny):
    """recipes/grpo-full.yaml's fp32 weights at its lr 1e-6: most language-model tensors change in 2 steps."""
    from emocli.runs import prepare_run
    from emocli.worker import run_method

    out = tiny["root"] / "full"
    recipe = load_recipe("tiny/grpo-full", [f"model.pretrained={tiny['vlm']}", f"data.prepared={tiny['prepared']}",
                                            f"run.output_dir={out}", "grpo.max_steps=2", *_real_settings("grpo-full")])
    assert recipe.model.dtype == "float32" and recipe.grpo.learning_rate == 1e-6
    run_method(prepare_run(recipe, ["test"]).dir, False)
    moved = json.loads((out / "final" / "train_summary.json").read_text())["trainable_tensors"]
    assert moved["language_model_changed"] >= moved["language_model_tensors"] / 2 > 0


def test_recipes_validate_and_map_onto_grpo_config(tmp_path):
    import dataclasses

    from trl import GRPOConfig

    from emocli.methods.grpo.train import grpo_config_kwargs, reward_functions

    real = load_recipe("grpo")
    assert real.model.pretrained == "Qwen/Qwen2.5-VL-3B-Instruct" and real.model.freeze_vision == "all"
    assert real.model.lora is not None and real.grpo.bf16 and real.launch.mixed_precision == "bf16"
    assert real.grpo.num_generations == 8 and real.grpo.temperature == 1.0
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for name in ("grpo", "grpo-full", "tiny/grpo", "tiny/grpo-full"):
        recipe = load_recipe(name)
        funcs, weights = reward_functions(recipe)
        kwargs = grpo_config_kwargs(recipe, tmp_path, weights)
        assert set(kwargs) <= fields, set(kwargs) - fields
        assert kwargs["output_dir"] == str(tmp_path / "trainer") and len(weights) == len(funcs)
    assert "max_prompt_length" not in fields  # TRL 1.16 never truncates prompts
    evaluation = load_recipe("eval-understanding")
    assert evaluation.models.base == real.model.pretrained and evaluation.models.tuned == real.run.output_dir


def test_recipe_errors_are_one_line():
    with pytest.raises(EmoError, match="multiple of grpo.num_generations"):
        load_recipe("tiny/grpo", ["grpo.per_device_train_batch_size=6"])
    with pytest.raises(EmoError, match="launch.mixed_precision"):
        load_recipe("tiny/grpo", ["launch.mixed_precision=bf16"])
    with pytest.raises(EmoError, match="models.base, models.tuned"):
        load_recipe("tiny/eval-understanding", ["models.base=null", "models.tuned=null"])
    with pytest.raises(EmoError, match="loss_type"):
        load_recipe("tiny/grpo", ["grpo.loss_type=ppo"])


def test_use_vllm_without_vllm_is_a_clear_error(tmp_path):
    import importlib.util

    from emocli.methods.grpo.train import make_grpo_config

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    recipe = load_recipe("tiny/grpo", ["grpo.use_vllm=true"])
    with pytest.raises(EmoError, match="vllm is not installed"):
        make_grpo_config(recipe, tmp_path, [1.0])


def test_cli_dry_run_and_deepspeed_launch_command(tiny):
    done = run_emo(*grpo_args(tiny, tiny["root"] / "dry", "--num-processes", "2", "--accelerate-config", "zero2",
                              "--dry-run"))
    assert done.returncode == 0, done.stderr
    assert "method: grpo" in done.stdout and "accelerate.commands.launch" in done.stdout
    assert "emocli.worker" in done.stdout and "--num_processes 2" in done.stdout
    bad = run_emo(*grpo_args(tiny, tiny["root"] / "dry", "grpo.generation_batch_size=8", "--num-processes", "3",
                             "--dry-run"))
    assert bad.returncode == 2 and "generation_batch_size" in bad.stderr


@pytest.mark.slow
def test_grpo_zero2_two_cpu_processes(tiny):
    """A real 2-process DeepSpeed ZeRO-2 GRPO run on CPU (gloo) and its resume (one to a few minutes)."""
    out = tiny["root"] / "zero2"
    common = grpo_args(tiny, out, "grpo.per_device_train_batch_size=4", "--num-processes", "2",
                       "--accelerate-config", "zero2")
    done = run_emo(*common, "grpo.max_steps=2")
    assert done.returncode == 0, _why(done)
    log = (out / "log.txt").read_text()
    assert "2 processes (DEEPSPEED ZeRO-2)" in log
    assert (out / "final" / "model" / "model.safetensors").is_file()
    done = run_emo(*common, "grpo.max_steps=3", "--resume")
    assert done.returncode == 0, _why(done)
    assert sorted(_train_rows(out)) == [1, 2, 3]
