"""`emo understand grpo`: GRPO fine-tuning of a vision-language model for emotion understanding, on TRL's
GRPOTrainer, inside our run directory.

1. Questions: the prepared EmoSet's images are split with no image shared between train, val and test
   (`questions.split_images`), optionally capped per split (seeded, stratified by emotion), and turned into
   binary / multiple-choice / misleading questions (`questions.build_questions`). All three sets are saved as
   RUN/questions/{train,val,test}.jsonl (image paths, gold answers, option orders) with a summary.json, so
   `emo eval understanding` asks exactly the same test questions; `--resume` reuses the saved sets.
2. Model: AutoModelForImageTextToText + AutoProcessor (left padding), optional frozen vision tower, optional
   LoRA (PEFT; with a frozen vision tower no adapter goes into it).
3. Training: GRPOTrainer with the reward functions of `rewards` weighted as in the recipe; TRL's output_dir is
   RUN/trainer, where its checkpoints (checkpoint-N) go; `--resume` continues from the newest complete one.
   TRL masks prompt tokens out of the loss (the original code averaged log-probs over prompt and image tokens).
   Logged values go to RUN/metrics.jsonl (one JSON object per logging step) and RUN/log.txt.
4. Export: RUN/final/model, loadable with AutoModelForImageTextToText / AutoProcessor.from_pretrained (with
   LoRA: the adapters merged in; the adapter alone also in RUN/final/adapter; under ZeRO-3 only the adapter).

Multi-process and DeepSpeed runs come through `emocli.launch` (`--num-processes N --accelerate-config zero2`):
GRPOTrainer builds its own Accelerator from the launch environment; on machines without a GPU the workers
use gloo, and DeepSpeed's accumulation and clipping are left to the trainer's arguments ("auto").
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.runs import Run, write_json_atomic
from emocli.written import publish

log = logging.getLogger("emocli")

QUESTIONS_DIR = "questions"
TRAINER_DIR = "trainer"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
VISION_MODULES = ("visual", "vision_tower", "vision_model", "vision_encoder")
PROJECTOR_MODULES = ("merger", "multi_modal_projector", "connector", "mm_projector")
# Run settings that the recipe's own keys or the run machinery decide: grpo.extra may not set them.
OWN_CONFIG_FIELDS = ("output_dir", "save_strategy", "eval_strategy", "eval_steps", "per_device_eval_batch_size",
                     "reward_weights", "disable_tqdm", "dataloader_pin_memory", "ddp_backend")


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def read_records(prepared) -> list[dict]:
    """Canonical EmoSet records: a prepared folder's records.jsonl, or an EmoSet release folder."""
    root = Path(str(prepared)).expanduser()
    if not root.is_dir():
        raise EmoError(f"prepared EmoSet folder {str(root)!r} does not exist (recipe key data.prepared; make one "
                       f"with `emo data prepare emoset --source ... --out ...`)")
    file = root / "records.jsonl"
    if file.is_file():
        out = []
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise EmoError(f"{file}:{n} is not valid JSON") from None
        return out
    if (root / "info.json").is_file() and (root / "train.json").is_file():
        from emocli.data.emoset import EmoSetRelease

        return EmoSetRelease(root).all_records(annotations=False)
    raise EmoError(f"{root} is neither a prepared EmoSet folder (records.jsonl) nor an EmoSet release "
                   f"(info.json, train.json) (recipe key data.prepared)")


def load_confusion(path):
    """A confusion matrix for misleading options from JSON: {true: {pred: n}}, an 8x8 list in EmoSet order,
    or {"matrix": rows, "labels": names} (what `emo eval understanding` writes as confusion_<model>.json)."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise EmoError(f"confusion file {str(file)!r} does not exist (recipe key data.confusion)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EmoError(f"{file} is not valid JSON: {e}") from None
    if isinstance(data, dict) and "matrix" in data:
        labels = data.get("labels") or list(EMOSET.labels)
        matrix = data["matrix"]
        if len(labels) != len(matrix):
            raise EmoError(f"{file}: {len(labels)} labels but {len(matrix)} matrix rows")
        return {true: dict(zip(labels, row)) for true, row in zip(labels, matrix)}
    return data


def subset(records: list[dict], n: int | None, seed: int, split: str) -> list[dict]:
    """At most `n` records: a seeded shuffle within each emotion, then emotions taken in turn (stratified)."""
    if n is None or len(records) <= n:
        return records
    groups: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: str(r["id"])):
        groups.setdefault(r["emotion"], []).append(r)
    for emotion, rs in groups.items():
        random.Random(f"{seed}:subset:{split}:{emotion}").shuffle(rs)
    order = [e for e in EMOSET.labels if e in groups] + sorted(e for e in groups if e not in EMOSET.labels)
    out: list[dict] = []
    depth = 0
    while len(out) < n:
        for e in order:
            if depth < len(groups[e]) and len(out) < n:
                out.append(groups[e][depth])
        depth += 1
    keep = {id(r) for r in out}
    return [r for r in records if id(r) in keep]


def build_question_sets(data) -> dict[str, list[dict]]:
    """{train, val, test: [question example, ...]} from a recipe's data section (GrpoDataSection)."""
    from emocli.methods.grpo.questions import build_questions, split_images

    records = read_records(data.prepared)
    splits = split_images(records, fractions=data.split_fractions, seed=data.seed,
                          keep_official=data.keep_official_split)
    caps = {"train": data.max_train, "val": data.max_eval, "test": data.max_eval}
    splits = {s: subset(rs, caps[s], data.seed, s) for s, rs in splits.items()}
    confusion = load_confusion(data.confusion) if data.confusion else None
    return build_questions(splits, types=data.question_types, seed=data.seed, confusion=confusion,
                           instruction_format=data.instruction_format, misleading_pick=data.misleading_pick,
                           system_prompt=data.system_prompt, misleading_right=data.misleading_right)


def summarize(sets: dict[str, list[dict]]) -> dict:
    """Counts per split and type, answer balance, and the image-overlap check (must be all zero)."""
    from collections import Counter

    images = {s: {e["image"] for e in qs} for s, qs in sets.items()}
    ids = {s: {e["image_id"] for e in qs} for s, qs in sets.items()}
    names = list(sets)
    overlap = {f"{a}/{b}": len(images[a] & images[b]) + len(ids[a] & ids[b])
               for i, a in enumerate(names) for b in names[i + 1:]}
    out = {"overlap": overlap, "splits": {}}
    for s, qs in sets.items():
        out["splits"][s] = {
            "questions": len(qs), "images": len(ids[s]),
            "by_type": dict(Counter(e["qtype"] for e in qs)),
            "emotions": dict(Counter(e["emotion"] for e in qs if e["qtype"] == qs[0]["qtype"])) if qs else {},
            "answers": {t: dict(Counter(e["answer"] for e in qs if e["qtype"] == t))
                        for t in ("binary", "multiple_choice") if any(e["qtype"] == t for e in qs)},
        }
    return out


def question_sets(run: Run, resume: bool, main_process: bool) -> dict[str, list[dict]]:
    """Build the question sets (and save them, main process) or, on --resume, read the saved ones."""
    from emocli.methods.grpo.evaluate import read_questions, write_questions

    folder = run.dir / QUESTIONS_DIR
    data = run.recipe.data.model_dump(mode="json")
    summary_file = folder / "summary.json"
    if resume and summary_file.is_file():
        saved = json.loads(summary_file.read_text())
        if saved.get("data") != data:
            raise EmoError(f"the recipe's data section differs from the one {run.dir} was started with "
                           f"({summary_file}); a resumed run must train on the same questions")
        sets = {s: read_questions(folder / f"{s}.jsonl") for s in saved["summary"]["splits"]}
        log.info("resume: read the saved questions from %s", folder)
        return sets
    sets = build_question_sets(run.recipe.data)
    summary = summarize(sets)
    if any(summary["overlap"].values()):
        raise EmoError(f"question splits share images: {summary['overlap']}")  # split_images guarantees this
    if main_process:
        for s, qs in sets.items():
            write_questions(folder / f"{s}.jsonl", qs)
        write_json_atomic(summary_file, {"data": data, "summary": summary})
    for s, info in summary["splits"].items():
        log.info("questions %s: %d (%d images; %s)", s, info["questions"], info["images"],
                 ", ".join(f"{k} {v}" for k, v in info["by_type"].items()))
    return sets


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------
def vision_tower(model) -> tuple[str, object]:
    """(qualified name, module) of a VLM's vision encoder: Qwen2/2.5-VL `model.visual`, LLaVA
    `model.vision_tower`, Idefics3 `model.vision_model`, ..."""
    names = {id(m): n for n, m in model.named_modules()}
    for owner in (getattr(model, "model", None), model):
        if owner is None:
            continue
        for attr in VISION_MODULES:
            module = getattr(owner, attr, None)
            if module is not None and id(module) in names and hasattr(module, "parameters"):
                return names[id(module)], module
    raise EmoError(f"cannot find the vision tower of {type(model).__name__} (looked for "
                   f"{', '.join(VISION_MODULES)}); set model.freeze_vision=none")


def projector(model, tower_name: str | None = None) -> tuple[str, object] | None:
    """(qualified name, module) of the projector from vision features to the language model: Qwen2/2.5-VL
    `visual.merger` (inside the vision tower), LLaVA `multi_modal_projector`, Idefics3 `connector`."""
    names = {id(m): n for n, m in model.named_modules()}
    owners = [getattr(model, "model", None), model]
    if tower_name:
        owners.insert(0, model.get_submodule(tower_name))
    for owner in owners:
        if owner is None:
            continue
        for attr in PROJECTOR_MODULES:
            module = getattr(owner, attr, None)
            if module is not None and id(module) in names and hasattr(module, "parameters"):
                return names[id(module)], module
    return None


def freeze_vision(model, mode: str) -> dict:
    """Freeze the vision side by `mode` (recipe key model.freeze_vision) and say what was frozen.

    "encoder": the vision tower's parameters except the projector's (Qwen's `visual.merger` lives inside
    `visual`; LLaVA's `multi_modal_projector` is outside `vision_tower`); "all": the tower and the projector;
    "none": nothing. Returns {"tower": name|None, "projector": name|None, "frozen": n, "trainable_projector": bool}.
    """
    if mode == "none":
        return {"tower": None, "projector": None, "frozen": 0, "trainable_projector": False}
    tower_name, tower = vision_tower(model)
    found = projector(model, tower_name)
    proj_name, proj = found if found else (None, None)
    proj_params = {id(p) for p in proj.parameters()} if proj is not None else set()
    frozen = 0
    for p in tower.parameters():
        if mode == "all" or id(p) not in proj_params:
            p.requires_grad_(False)
            frozen += getattr(p, "ds_numel", p.numel())
    if mode == "all" and proj is not None and not proj_name.startswith(tower_name + "."):
        for p in proj.parameters():
            p.requires_grad_(False)
            frozen += getattr(p, "ds_numel", p.numel())
    return {"tower": tower_name, "projector": proj_name, "frozen": frozen,
            "trainable_projector": mode == "encoder" and proj is not None}


def lora_config(recipe, frozen: dict):
    """Adapters on `lora.target_modules`, never inside a frozen vision tower (Qwen's vision MLPs are also named
    gate/up/down_proj); with freeze_vision=encoder the projector trains whole (PEFT modules_to_save)."""
    from peft import LoraConfig

    lora = recipe.model.lora
    kwargs = {}
    if frozen.get("tower"):
        kwargs["exclude_modules"] = rf"{re.escape(frozen['tower'])}(\..*)?"
    if frozen.get("trainable_projector"):
        kwargs["modules_to_save"] = [frozen["projector"].rsplit(".", 1)[-1]]
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM", **kwargs)


def make_length_reward(max_completion_length: int):
    """Characters of the completion / (4 x max_completion_length), at most 1: a signal that varies even on
    random models (smoke tests only; recipe key rewards.length)."""
    from emocli.methods.grpo.rewards import completion_text

    scale = 4.0 * max_completion_length

    def length_reward(completions, **kwargs) -> list[float]:
        return [min(1.0, len(completion_text(c)) / scale) for c in completions]

    return length_reward


def reward_functions(recipe) -> tuple[list, list[float]]:
    from emocli.methods.grpo.rewards import accuracy_reward, format_reward, make_polarity_reward

    r = recipe.rewards
    table = [("accuracy", accuracy_reward, r.accuracy), ("format", format_reward, r.format),
             ("polarity", make_polarity_reward(r.polarity_partial), r.polarity),
             ("length", make_length_reward(recipe.grpo.max_completion_length), r.length)]
    funcs = [f for _, f, w in table if w > 0]
    weights = [float(w) for _, _, w in table if w > 0]
    return funcs, weights


# ---------------------------------------------------------------------------------------------------
# GRPOConfig
# ---------------------------------------------------------------------------------------------------
def grpo_config_kwargs(recipe, run_dir: Path, weights: list[float]) -> dict:
    """GRPOConfig keyword arguments from the recipe (every key exists in TRL 1.16's GRPOConfig)."""
    import torch

    from emocli.progress import interactive

    g = recipe.grpo
    kwargs = dict(
        output_dir=str(Path(run_dir) / TRAINER_DIR),
        seed=recipe.run.seed if g.seed is None else g.seed,
        num_generations=g.num_generations, beta=g.beta, loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        epsilon=g.epsilon, num_iterations=g.num_iterations, max_completion_length=g.max_completion_length,
        temperature=g.temperature, top_p=g.top_p,
        learning_rate=g.learning_rate, lr_scheduler_type=g.lr_scheduler_type, warmup_steps=g.warmup_steps,
        weight_decay=g.weight_decay, max_grad_norm=g.max_grad_norm,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps, generation_batch_size=g.generation_batch_size,
        max_steps=g.max_steps if g.max_steps is not None else -1, num_train_epochs=g.num_train_epochs,
        logging_steps=g.logging_steps, save_strategy="steps", save_steps=g.save_steps,
        save_total_limit=g.save_total_limit, bf16=g.bf16, gradient_checkpointing=g.gradient_checkpointing,
        use_vllm=g.use_vllm, log_completions=g.log_completions, report_to=list(g.report_to) or "none",
        dataloader_num_workers=g.dataloader_num_workers, reward_weights=weights,
        disable_tqdm=not interactive(), dataloader_pin_memory=torch.cuda.is_available(),
        eval_strategy="steps" if g.eval_every else "no",
    )
    if g.eval_every:
        kwargs.update(eval_steps=g.eval_every, per_device_eval_batch_size=g.per_device_train_batch_size)
    if g.use_vllm:
        kwargs.update(vllm_mode=g.vllm_mode, vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization)
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        kwargs["ddp_backend"] = "gloo"  # accelerate picks no backend without a GPU (docs/architecture.md)
    check_extra(g)
    kwargs.update(g.extra)
    return kwargs


def check_extra(grpo) -> None:
    """grpo.extra names only GRPOConfig fields (checked against dataclasses.fields(GRPOConfig)), none that the
    recipe sets under its own key or that the run decides itself."""
    import dataclasses

    from trl import GRPOConfig

    from emocli.errors import close_matches
    from emocli.methods.grpo.config import GrpoSection

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in grpo.extra:
        if key in GrpoSection.model_fields and key != "extra":
            raise EmoError(f"grpo.extra.{key}: set it as grpo.{key} (a key of the recipe's grpo section)")
        if key in OWN_CONFIG_FIELDS:
            raise EmoError(f"grpo.extra.{key} is set by the run itself; it cannot be overridden")
        if key not in fields:
            raise EmoError(f"grpo.extra.{key} is not a field of TRL's GRPOConfig{close_matches(key, sorted(fields))}")


def make_grpo_config(recipe, run_dir: Path, weights: list[float]):
    import torch
    from trl import GRPOConfig

    if recipe.grpo.bf16 and not torch.cuda.is_available():
        raise EmoError("grpo.bf16=true needs a CUDA GPU; on CPU set grpo.bf16=false (and model.dtype=float32)")
    for tracker in recipe.grpo.report_to:
        if _missing(tracker):
            raise EmoError(f"grpo.report_to names {tracker} but it is not installed (pip install {tracker}); "
                           f"or remove it from grpo.report_to")
    if "tensorboard" in recipe.grpo.report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir) / "tb")
    if recipe.grpo.use_vllm and _missing("vllm"):
        raise EmoError("grpo.use_vllm=true but vllm is not installed (TRL 1.16 supports vllm 0.22 to 0.31: "
                       "pip install 'trl[vllm]'); or set grpo.use_vllm=false")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # The shipped DeepSpeed configs carry accumulation 1 and clipping 1.0; the trainer's arguments decide.
        os.environ["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] = "auto"
        os.environ["ACCELERATE_GRADIENT_CLIPPING"] = "auto"
    try:
        return GRPOConfig(**grpo_config_kwargs(recipe, run_dir, weights))
    except ValueError as e:
        raise EmoError(f"GRPOConfig rejected the recipe's grpo section: {str(e).splitlines()[0]}") from None


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
def trainer_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """Complete TRL checkpoints (trainer_state.json inside) under RUN/trainer, oldest first."""
    root = Path(run_dir) / TRAINER_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_trainer_checkpoint(run_dir) -> Path | None:
    found = trainer_checkpoints(run_dir)
    return found[-1][1] if found else None


def trainer_class():
    """GRPOTrainer that resumes full-weight checkpoints the way from_pretrained loads them.

    transformers' Trainer reloads checkpoint-N/model.safetensors with a plain `load_state_dict(strict=False)`,
    but save_pretrained writes models with a checkpoint conversion mapping (LLaVA, Qwen2/2.5-VL, ...) under
    their original key names, so nothing matches and training silently restarts from the initial weights
    (transformers 5.23). Here the checkpoint is loaded through from_pretrained and copied in, strictly.
    DeepSpeed checkpoints (their own format) and PEFT adapters keep the trainer's own path.
    """
    from trl import GRPOTrainer

    class EmoGRPOTrainer(GRPOTrainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            from peft import PeftModel

            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            ckpt = Path(resume_from_checkpoint)
            full = (ckpt / "model.safetensors").is_file() or (ckpt / "model.safetensors.index.json").is_file()
            if not full or isinstance(target, PeftModel) or self.is_fsdp_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            dtype = next(target.parameters()).dtype
            loaded = type(target).from_pretrained(str(ckpt), dtype=dtype)
            result = target.load_state_dict(loaded.state_dict(), strict=False)
            del loaded
            if result.missing_keys or result.unexpected_keys:
                raise EmoError(f"checkpoint {ckpt} does not match the model: missing "
                               f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
            log.info("resumed the weights of %s", ckpt)

    return EmoGRPOTrainer


def _metrics_callback(run_dir: Path):
    from transformers import TrainerCallback

    path = Path(run_dir) / "metrics.jsonl"

    class MetricsToRun(TrainerCallback):
        """Every log of the trainer as one line of RUN/metrics.jsonl (main process), plus a short log line."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            keys = [k for k in ("loss", "reward", "reward_std", "rewards/accuracy_reward/mean",
                                "rewards/format_reward/mean", "kl", "frac_reward_zero_std") if k in row]
            if keys:
                log.info("step %d/%d %s", state.global_step, state.max_steps,
                         " ".join(f"{k.replace('rewards/', '').replace('_reward/mean', '')}={row[k]:.4g}"
                                  for k in keys))

    return MetricsToRun()


# ---------------------------------------------------------------------------------------------------
# Entry
# ---------------------------------------------------------------------------------------------------
def main(run: Run, resume: bool = False) -> None:
    import torch

    from emocli.hub import quiet_loading
    from emocli.methods.grpo.evaluate import load_model, load_processor, resolve_dtype
    from emocli.methods.grpo.questions import to_dataset
    from emocli.progress import setup_logging

    recipe = run.recipe
    main_process = int(os.environ.get("RANK", "0")) == 0
    setup_logging(run.dir, main_process)
    quiet_loading()

    checkpoint = latest_trainer_checkpoint(run.dir)
    if checkpoint is not None and not resume:
        raise EmoError(f"run directory {run.dir} already has TRL checkpoints ({checkpoint.name}); pass --resume "
                       f"to continue it, or choose another directory with run.output_dir=...")
    if resume and checkpoint is None:
        log.warning("--resume: no complete checkpoint in %s; starting from the beginning", run.dir / TRAINER_DIR)

    sets = question_sets(run, resume, main_process)
    if not sets.get("train"):
        raise EmoError(f"no training questions: the train split of {recipe.data.prepared} is empty")
    train_dataset = to_dataset(sets["train"])
    funcs, weights = reward_functions(recipe)
    args = make_grpo_config(recipe, run.dir, weights)  # before the model: sets up DeepSpeed ZeRO-3 init
    main_process = args.process_index == 0

    m = recipe.model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor = load_processor(m.pretrained, "model.pretrained", m.min_pixels, m.max_pixels)
    dtype = resolve_dtype(m.dtype, device)
    model = load_model(m.pretrained, "model.pretrained", dtype, m.attn_implementation)
    frozen = freeze_vision(model, m.freeze_vision)
    if frozen["tower"]:
        log.info("model.freeze_vision=%s: froze %s parameters of %s%s", m.freeze_vision, f"{frozen['frozen']:,}",
                 frozen["tower"], f" ({frozen['projector']} trains)" if frozen["trainable_projector"] else
                 f" and {frozen['projector']}" if frozen["projector"] else "")
    if dtype != torch.float32:
        what = ("the projector (trained whole next to the adapters)" if m.lora is not None and
                frozen["trainable_projector"] else "every trainable weight" if m.lora is None else None)
        if what:
            log.warning("%s is stored in %s: updates of lr %g mostly round away without an fp32 copy; use "
                        "model.dtype=float32 with grpo.bf16=true (recipes/grpo-full.yaml), LoRA, or "
                        "freeze_vision=all", what, m.dtype, recipe.grpo.learning_rate)
    peft_config = lora_config(recipe, frozen) if m.lora is not None else None
    eval_dataset = to_dataset(eval_questions(sets.get("val") or [], recipe)) if recipe.grpo.eval_every else None

    try:
        trainer = trainer_class()(model=model, reward_funcs=funcs, args=args, train_dataset=train_dataset,
                                  eval_dataset=eval_dataset, processing_class=processor, peft_config=peft_config,
                                  callbacks=[_metrics_callback(run.dir), _plan_callback(len(train_dataset))])
    except ValueError as e:
        raise EmoError(f"cannot set up GRPO training: {str(e).splitlines()[0]}") from None
    if args.disable_tqdm:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # our callback logs a short line per logging step
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in trainer.model.parameters()]  # ZeRO-3
    trainable, total = sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)
    state = args.distributed_state
    log.info("GRPO: %d training questions, %d generations each, %s trainable of %s parameters, %d process%s "
             "(%s%s)%s", len(train_dataset), args.num_generations, f"{trainable:,}", f"{total:,}", state.num_processes,
             "es" if state.num_processes > 1 else "", state.distributed_type.value,
             f" ZeRO-{args.deepspeed_plugin.zero_stage}" if args.deepspeed_plugin is not None else "",
             f"; resuming from {checkpoint.name}" if resume and checkpoint else "")
    before = sample_trainable(trainer.model)
    trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint else None)
    moved = changed_tensors(before, trainer.model)
    log.info("trainable tensors that changed (half of their elements or more): %d of %d (language model: %d of "
             "%d; %.1f%% of its sampled elements)", moved["changed"], moved["tensors"], moved["language_model_changed"],
             moved["language_model_tensors"], 100 * moved["language_model_elements_changed"])
    if moved["tensors"] and moved["changed"] < moved["tensors"] / 2 and trainer.state.global_step >= 2:
        log.warning("fewer than half of the trainable tensors changed: updates may be rounding away "
                    "(low-precision weights without an fp32 copy) or the rewards have no variance")
    export(trainer, processor, run, recipe, main_process, moved)


def eval_questions(val: list[dict], recipe) -> list[dict]:
    """The validation questions evaluated during training: a seeded sample of grpo.eval_questions (all when
    null), in their saved order."""
    if not val:
        raise EmoError("grpo.eval_every is set but the val split has no questions (data.max_eval, the split)")
    n = recipe.grpo.eval_questions
    if n is None or n >= len(val):
        return val
    keep = set(random.Random(f"{recipe.data.seed}:eval").sample(range(len(val)), n))
    return [q for i, q in enumerate(val) if i in keep]


SAMPLED_ELEMENTS = 4096  # per tensor: enough to see an update, cheap even for a 3B model


def sample_trainable(model) -> dict:
    """{name: the first SAMPLED_ELEMENTS values (a CPU copy)} of every trainable parameter (empty under
    ZeRO-3, whose parameters are partitioned)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.numel() > 0:
            out[name] = p.detach().reshape(-1)[:SAMPLED_ELEMENTS].to("cpu", copy=True)
    return out


def changed_tensors(before: dict, model) -> dict:
    """Which sampled trainable tensors moved: a tensor counts as changed when at least half of its sampled
    elements differ (a few near-zero elements change even when bf16 rounds the other updates away). Also the
    share of changed elements of the language model's tensors."""

    params = dict(model.named_parameters())
    shares = {}
    for name, old in before.items():
        if name in params:
            new = params[name].detach().reshape(-1)[:old.numel()].cpu()
            shares[name] = (new != old).float().mean().item()
    lm = [n for n in shares if "language_model" in n or ".layers." in n and not any(v in n for v in VISION_MODULES)]
    changed = {n for n, share in shares.items() if share >= 0.5}
    sizes = {n: before[n].numel() for n in lm}
    elements = sum(shares[n] * sizes[n] for n in lm) / max(1, sum(sizes.values()))
    return {"tensors": len(shares), "changed": len(changed), "language_model_tensors": len(lm),
            "language_model_changed": len(set(lm) & changed), "language_model_elements_changed": round(elements, 4)}


def plan(state, args, n_questions: int) -> str:
    """The planned run length from TRL's own count of optimizer steps."""
    completions = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    prompts = completions // args.num_generations
    seen = state.max_steps * prompts
    return (f"planned {state.max_steps} optimizer steps x {prompts} questions ({completions} completions, "
            f"{args.num_generations} per question) = {seen:,} question draws of {n_questions:,} training "
            f"questions ({seen / max(1, n_questions):.2f} epochs)")


def _plan_callback(n_questions: int):
    from transformers import TrainerCallback

    class PlanToLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                log.info("%s", plan(state, args, n_questions))

    return PlanToLog()


def export(trainer, processor, run: Run, recipe, main_process: bool, moved: dict | None = None) -> None:
    """RUN/final/model (+ RUN/final/adapter with LoRA), written to a temporary folder and renamed."""
    from peft import PeftModel

    args = trainer.args
    final, tmp = run.final, run.dir / ".final.tmp"
    if main_process and tmp.exists():
        shutil.rmtree(tmp)
    args.distributed_state.wait_for_everyone()
    is_peft = isinstance(trainer.model, PeftModel)
    zero3 = args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3
    if is_peft:
        trainer.save_model(str(tmp / "adapter"))  # every process: DeepSpeed gathers
        if main_process:
            if zero3:
                log.warning("LoRA under ZeRO-3: final/model holds the adapter only (it loads onto %s)",
                            recipe.model.pretrained)
                shutil.copytree(tmp / "adapter", tmp / "model")
            else:
                merged = trainer.model.merge_and_unload()
                merged.save_pretrained(str(tmp / "model"))
                processor.save_pretrained(str(tmp / "model"))
    else:
        trainer.save_model(str(tmp / "model"))  # every process (ZeRO-3 gathers the 16-bit weights)
        if main_process:
            processor.save_pretrained(str(tmp / "model"))
    if main_process:
        state = trainer.state
        rewards = [h["reward"] for h in state.log_history if "reward" in h]
        write_json_atomic(tmp / "train_summary.json", {
            "global_step": state.global_step, "lora": is_peft, "base_model": recipe.model.pretrained,
            "first_reward": rewards[0] if rewards else None, "last_reward": rewards[-1] if rewards else None,
            "questions": str(run.dir / QUESTIONS_DIR), "trainable_tensors": moved,
        })
        if final.exists():
            shutil.rmtree(final)
        publish(tmp, final)
        log.info("final model: %s", final / "model")
    args.distributed_state.wait_for_everyone()
