"""Recipe schemas of `emo understand grpo` and `emo eval understanding` (torch-free).

GRPO sections: `model` (the VLM, its dtype, attention, vision freezing, optional LoRA), `data` (the
prepared EmoSet, question types and how they are built), `rewards` (weights of the reward functions of
`emocli.methods.grpo.rewards`) and `grpo` (TRL 1.16 `GRPOConfig` settings under TRL's own names; only
keys that exist there). The evaluation recipe names the models to compare and where the test questions
come from (a GRPO run's saved questions, so base and tuned answer exactly the same ones).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from emocli.recipes.schema import Recipe, Section

QuestionType = Literal["binary", "multiple_choice", "misleading"]
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"]


class LoraSection(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    # Module names (suffixes) that get adapters. In Qwen2.5-VL the vision MLPs are also called
    # gate/up/down_proj: with model.freeze_vision the vision tower is excluded whatever matches here.
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1)


class GrpoModelSection(Section):
    # A vision-language model (AutoModelForImageTextToText + AutoProcessor): Hub id or local folder.
    # Qwen2.5-VL's processor needs torchvision (`pip install 'emocli[vision]'`).
    pretrained: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    # Weights' dtype when loaded; "auto": bfloat16 on a GPU, float32 on CPU.
    dtype: Dtype = "auto"
    # null: transformers' default (sdpa where supported).
    attn_implementation: Optional[AttnImplementation] = None
    # What of the vision side stays frozen. "encoder": the vision encoder (Qwen2/2.5-VL `visual` minus
    # `visual.merger`; LLaVA `vision_tower`); the projector (`visual.merger`, `multi_modal_projector`) and
    # the language model train. "all": the encoder and the projector (Qwen: all of `visual`).
    # "none": nothing (LoRA adapters may then also go into the vision tower).
    freeze_vision: Literal["all", "encoder", "none"] = "encoder"
    lora: Optional[LoraSection] = None
    # Image size bounds of Qwen2-VL-family processors (pixels); null: the processor's own.
    min_pixels: Optional[int] = Field(None, ge=1)
    max_pixels: Optional[int] = Field(None, ge=1)


class GrpoDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare emoset` (records.jsonl), "
                                           "or an EmoSet release folder")
    question_types: list[QuestionType] = Field(
        default_factory=lambda: ["binary", "multiple_choice", "misleading"], min_length=1)
    # Seeds the splits (when re-split), every question draw and the image subsets.
    seed: int = 0
    # "answer_tags": <answer>...</answer> only; "think_answer": <think>...</think> first.
    instruction_format: Literal["answer_tags", "think_answer"] = "answer_tags"
    system_prompt: Optional[str] = None
    # The base model's confusion matrix (JSON: {true: {pred: count}}, an 8x8 list in EmoSet order, or
    # {"matrix": ..., "labels": ...} as `emo eval understanding` writes it) for misleading options;
    # null: random draws (within the polarity balance of the misleading questions).
    confusion: Optional[str] = None
    misleading_pick: Literal["proportional", "most_confused"] = "proportional"
    # Share of misleading questions whose suggested emotion is the right one (answer: accept it). Wrong
    # suggestions are drawn so that the suggestion's polarity matches the truth in half of the questions
    # (possible up to 0.5). At 1/8 (the default) the suggestion is uniform and independent of the answer, so
    # echoing it scores chance; at 0, "always reject the suggestion" is always rewarded.
    misleading_right: float = Field(0.125, ge=0, le=0.5)
    # Keep the official train/val/test split (missing held-out splits are carved out of train);
    # false: re-split all images by `split_fractions`, stratified by emotion.
    keep_official_split: bool = True
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # Images per split (each gives one question per type); a seeded, emotion-stratified subset.
    max_train: Optional[int] = Field(None, ge=1, description="training images")
    max_eval: Optional[int] = Field(None, ge=1, description="validation and test images (each)")


class RewardsSection(Section):
    """Weights of the reward functions (0 leaves one out). TRL sums the weighted rewards."""

    accuracy: float = Field(1.0, ge=0)
    format: float = Field(0.25, ge=0)
    polarity: float = Field(0.25, ge=0)
    # Credit of the polarity reward for a wrong emotion of the right polarity.
    polarity_partial: float = Field(0.5, ge=0, le=1)
    # Completion length / max_completion_length: for smoke tests of random models only, which never
    # produce the answer format (all task rewards 0 -> zero advantages -> no update). Keep 0 for real runs.
    length: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _some_reward(self):
        if not any(w > 0 for w in (self.accuracy, self.format, self.polarity, self.length)):
            raise ValueError("every reward weight is 0; give at least one a positive weight")
        return self


class GrpoSection(Section):
    """TRL 1.16 GRPOConfig settings (same names). There is no max_prompt_length in TRL 1.16: prompts
    are never truncated (truncating would cut image tokens)."""

    num_generations: int = Field(8, ge=2)
    beta: float = Field(0.04, ge=0)
    loss_type: LossType = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = Field(0.2, gt=0)
    num_iterations: int = Field(1, ge=1)
    max_completion_length: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    learning_rate: float = Field(1e-6, gt=0)
    lr_scheduler_type: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    per_device_train_batch_size: int = Field(8, ge=1, description="completions per device per step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    # Completions generated at once (a multiple of num_generations); null: TRL's default
    # (per_device_train_batch_size x processes x gradient_accumulation_steps).
    generation_batch_size: Optional[int] = Field(None, ge=2)
    max_steps: Optional[int] = Field(None, ge=1, description="optimizer steps; overrides num_train_epochs")
    num_train_epochs: float = Field(1.0, gt=0)
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: Optional[int] = Field(2, ge=1)
    bf16: bool = True
    gradient_checkpointing: bool = True
    # vLLM generation (needs `vllm` installed, TRL 1.16 supports 0.22-0.31); colocate shares the GPUs.
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    log_completions: bool = False
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(default_factory=list)
    dataloader_num_workers: int = Field(0, ge=0)
    # Evaluate on the validation questions every N optimizer steps (TRL's eval_strategy="steps"); logged as
    # eval_* rows of metrics.jsonl. null: no evaluation during training.
    eval_every: Optional[int] = Field(None, ge=1)
    # Validation questions used by those evaluations (a seeded sample of the val split); null: all.
    eval_questions: Optional[int] = Field(256, ge=1)
    # null: run.seed
    seed: Optional[int] = None
    # Any other TRL GRPOConfig field by its own name (e.g. {num_generations_eval: 2, mask_truncated_completions:
    # true}); names are checked against dataclasses.fields(GRPOConfig) before the run starts. Keys of this
    # section and the ones the run sets itself (output_dir, save_strategy, eval_strategy, ...) are refused.
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_breaking_extra(self):
        for key in self.extra:
            why = BREAKING_EXTRA.get("hub_*" if str(key).startswith("hub_") else key)
            if why:
                raise ValueError(f"grpo.extra.{key} is refused: {why}")
        return self


# grpo.extra keys that break a run or its resume, with the reason
BREAKING_EXTRA = {
    "remove_unused_columns": "the reward functions need every dataset column (answer, qtype, emotion, ...)",
    "save_only_model": "checkpoints without optimizer and scheduler state cannot be resumed",
    "push_to_hub": "runs stay local; upload the exported final/model yourself",
    "hub_*": "runs stay local; upload the exported final/model yourself",
    "use_cpu": "the device comes from the launch section (accelerate), not from GRPOConfig",
}


class GrpoRecipe(Recipe):
    method: Literal["grpo"] = "grpo"
    model: GrpoModelSection = Field(default_factory=GrpoModelSection)
    data: GrpoDataSection
    rewards: RewardsSection = Field(default_factory=RewardsSection)
    grpo: GrpoSection = Field(default_factory=GrpoSection)

    @model_validator(mode="before")
    @classmethod
    def _launch_precision_follows_bf16(cls, data):
        """launch.mixed_precision defaults to what grpo.bf16 says (accelerate and the trainer must agree)."""
        if isinstance(data, dict):
            grpo = data.get("grpo") if isinstance(data.get("grpo"), dict) else {}
            launch = data.get("launch") if isinstance(data.get("launch"), dict) else {}
            if launch.get("mixed_precision") is None:
                bf16 = grpo.get("bf16", GrpoSection.model_fields["bf16"].default)
                data = {**data, "launch": {**launch, "mixed_precision": "bf16" if bf16 is True else "no"}}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        g = self
        want = "bf16" if g.grpo.bf16 else "no"
        if g.launch.mixed_precision != want:
            raise ValueError(f"launch.mixed_precision is {g.launch.mixed_precision!r} but grpo.bf16 is "
                             f"{g.grpo.bf16}: set launch.mixed_precision={want} (or leave it out)")
        check_generation_batch(g.grpo, g.launch.world_size)
        return self


def check_generation_batch(grpo: GrpoSection, num_processes: int) -> None:
    """TRL's rule: a generation batch holds whole groups of num_generations completions."""
    per_step = grpo.per_device_train_batch_size * num_processes
    if grpo.generation_batch_size is not None:
        if grpo.generation_batch_size % per_step:
            raise ValueError(f"grpo.generation_batch_size={grpo.generation_batch_size} must be a multiple of "
                             f"per_device_train_batch_size x processes = {per_step}")
        batch = grpo.generation_batch_size
    else:
        batch = per_step * grpo.gradient_accumulation_steps
    if batch % grpo.num_generations:
        raise ValueError(
            f"the generation batch ({batch} completions = per_device_train_batch_size "
            f"{grpo.per_device_train_batch_size} x {num_processes} processes x "
            f"{'generation_batch_size' if grpo.generation_batch_size else 'gradient_accumulation_steps'}) "
            f"must be a multiple of grpo.num_generations={grpo.num_generations}")
    if grpo.eval_every is not None:
        # TRL's eval rule; the run sets per_device_eval_batch_size = per_device_train_batch_size
        group = grpo.extra.get("num_generations_eval") or grpo.num_generations
        if per_step % group:
            raise ValueError(f"evaluation (grpo.eval_every) needs per_device_train_batch_size x processes = "
                             f"{per_step} to be a multiple of the evaluation group size {group} "
                             f"(num_generations_eval or num_generations): set grpo.extra.num_generations_eval to "
                             f"a divisor of {per_step}, or change the batch size")


# ---------------------------------------------------------------------------------------------------
# emo eval understanding
# ---------------------------------------------------------------------------------------------------
class EvalModelsSection(Section):
    # The model before tuning: a Hub id or folder. null: no base column.
    base: Optional[str] = None
    # A `emo understand grpo` run directory (its final/model) or a model folder. null: base only.
    tuned: Optional[str] = None
    dtype: Dtype = "auto"
    attn_implementation: Optional[AttnImplementation] = None
    min_pixels: Optional[int] = Field(None, ge=1)
    max_pixels: Optional[int] = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _one_model(self):
        if self.base is None and self.tuned is None:
            raise ValueError("set models.base, models.tuned, or both")
        return self


class EvalQuestionsSection(Section):
    # A GRPO run directory (its questions/<split>.jsonl) or a questions JSONL file. null: the tuned
    # run's questions when models.tuned is a run, else built from `build`.
    questions: Optional[str] = None
    split: Literal["test", "val"] = "test"
    # Build the questions from a prepared EmoSet (same rules as `emo understand grpo`) when there is no
    # run to read them from, e.g. to evaluate a base model alone.
    build: Optional[GrpoDataSection] = None
    # Evaluate only the first N images (all their questions); null: all.
    max_images: Optional[int] = Field(None, ge=1)


class EvalGenerationSection(Section):
    """Greedy decoding, batched."""

    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(64, ge=1)


class EvalReportSection(Section):
    plot: bool = True  # confusion-matrix PNGs (matplotlib)
    # Predictions (question, answer text, parsed emotion) per model as JSONL.
    save_predictions: bool = True


class EvalUnderstandingRecipe(Recipe):
    method: Literal["eval-understanding"] = "eval-understanding"
    models: EvalModelsSection
    data: EvalQuestionsSection = Field(default_factory=EvalQuestionsSection)
    generation: EvalGenerationSection = Field(default_factory=EvalGenerationSection)
    report: EvalReportSection = Field(default_factory=EvalReportSection)
