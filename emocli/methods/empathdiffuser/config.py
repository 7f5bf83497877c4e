"""Recipe schemas of `emo train empathdiffuser` and `emo eval empathy` (torch-free)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from emocli.recipes.schema import OptimSection, Recipe, Section, TrainRecipe


class EmpathModelSection(Section):
    # A UniDiffuser pipeline folder or Hub id in diffusers' layout (unet, vae, text_encoder, image_encoder,
    # clip_image_processor, clip_tokenizer, text_decoder, text_tokenizer, scheduler).
    pretrained: str = "thu-ml/unidiffuser-v1"
    # false: the U-ViT starts from random weights (the encoders and caption decoder still come from
    # `pretrained`); for ablations and the full-size smoke test.
    pretrained_unet: bool = True
    gradient_checkpointing: bool = False
    # Also fine-tune the caption decoder (GPT-2 + decode_prefix) on the responses; encode_prefix stays
    # frozen so the cached 64-d text latents keep their meaning.
    finetune_text_decoder: bool = False
    # Share of training samples whose speaker condition is replaced by the null tokens (guidance).
    condition_dropout: float = Field(0.1, ge=0, lt=1)
    # UniDiffuser-v1's data-type token: 1 = its "internal, less noisy" data (its sampling default).
    data_type: Literal[0, 1] = 1


class EmpathDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare avamerg`")
    train_split: str = "train"
    val_split: Optional[str] = "val"
    # Square size faces are resized to before the VAE (AvaMERG frames are 256 px: 32x32 latents with SD's VAE).
    resolution: int = Field(256, ge=8)
    # Folder for the cached encodings (keyed by model identity and resolution). null: RUN/cache.
    feature_cache: Optional[str] = None
    encoder_batch_size: int = Field(32, ge=1)
    max_samples: Optional[int] = Field(None, ge=1, description="first N training pairs (quick runs)")


class EmpathLossSection(Section):
    # Cross-entropy of the [EMO] head over the 7 coarse emotions, computed in a pass whose response
    # tokens are pure noise (t = 1000), as at test time. EmpathDiffuser's value: 0.1.
    emotion_weight: float = Field(0.1, ge=0)
    # Teacher-forced caption-decoder loss on the responses (with model.finetune_text_decoder).
    text_decoder_weight: float = Field(1.0, ge=0)


class EmpathSampleSection(Section):
    # DPM-Solver++ (diffusers' DPMSolverMultistepScheduler, order 3 as UniDiffuser's converter) steps.
    steps: int = Field(50, ge=1)
    # diffusers' convention g = original UniDiffuser scale s + 1: g*eps(cond) + (1-g)*eps(null); g <= 1: no guidance.
    guidance: float = Field(8.0, ge=0)
    decoding: Literal["beam", "greedy"] = "beam"
    max_reply_tokens: int = Field(67, ge=1)


class EmpathValidationSection(Section):
    max_samples: int = Field(256, ge=1, description="val pairs for emotion accuracy / macro-F1")
    # Val pairs whose listener face is generated to measure matched vs mismatched latent distance (0: none).
    face_samples: int = Field(16, ge=0)
    face_steps: int = Field(10, ge=1)
    seed: int = 0


class EmpathDiffuserRecipe(TrainRecipe):
    method: Literal["empathdiffuser"] = "empathdiffuser"
    model: EmpathModelSection = Field(default_factory=EmpathModelSection)
    data: EmpathDataSection
    loss: EmpathLossSection = Field(default_factory=EmpathLossSection)
    sample: EmpathSampleSection = Field(default_factory=EmpathSampleSection)
    validation: EmpathValidationSection = Field(default_factory=EmpathValidationSection)
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=3e-5, weight_decay=0.03, betas=(0.9, 0.9)))


class EvalEmpathyDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare avamerg`")
    split: str = "test"
    max_samples: Optional[int] = Field(None, ge=1, description="first N pairs of the split (quick runs)")


class EvalEmpathyModelsSection(Section):
    run: str = Field(..., description="an `emo train empathdiffuser` run directory")
    weights: Literal["final", "best"] = "final"
    # FID Inception-v3 weights (pytorch-fid / torch-fidelity .pth or a .safetensors conversion); null: no FID.
    inception: Optional[str] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvalEmpathySampleSection(Section):
    steps: Optional[int] = Field(None, ge=1, description="null: the run's sample.steps")
    guidance: Optional[float] = Field(None, ge=0)
    decoding: Optional[Literal["beam", "greedy"]] = None
    seed: int = 0
    batch_size: int = Field(16, ge=1)


class EvalEmpathyRecipe(Recipe):
    method: Literal["eval-empathy"] = "eval-empathy"
    data: EvalEmpathyDataSection
    models: EvalEmpathyModelsSection
    sample: EvalEmpathySampleSection = Field(default_factory=EvalEmpathySampleSection)
