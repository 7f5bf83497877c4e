"""Recipe schema of `emo train emogen` and of EmoGen sampling (torch-free).

Defaults reproduce the released EmoGen configuration (mapper MLP 2 layers + ReLU, AdamW lr 1e-3,
weight decay 1e-2, constant LR, attribute weight 0.01 on raw cosines, emotion loss off, seed 520).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from emocli.emotions import EMOSET
from emocli.recipes.schema import OptimSection, Section, TrainRecipe

Scheduler = Literal["unipc", "dpm++", "ddim", "ddpm", "pndm"]


class MapperSection(Section):
    name: Literal["mlp", "fc"] = "mlp"
    num_fc_layers: int = Field(2, ge=2)
    hidden_dim: int = Field(1024, ge=1)
    relu: bool = True
    layer_norm: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)


class EmoGenModelSection(Section):
    # A diffusers Stable Diffusion folder or Hub id (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    pretrained: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # Replaces the SD text encoder (and tokenizer, when the folder has one): e.g. an EmoCLIP run's
    # final/text_encoder. null keeps SD's own.
    text_encoder: Optional[str] = None
    # A CLIPModel whose text tower matches the SD text encoder (CLIP-L for SD 1.5): its
    # text_projection and text features of the attribute vocabulary make the attribute loss.
    clip: str = "openai/clip-vit-large-patch14"
    # An `emo train emotion-encoder` run (or its final/model folder): emotion vectors of training images.
    emotion_encoder: Optional[str] = None
    # Emotion space for sampling: our emotion_space.safetensors, a folder holding it, or the official
    # emo_space/ folder. null: the emotion encoder run's final/ space.
    emotion_space: Optional[str] = None
    # Train with an emotion space whose encoder differs from model.emotion_encoder (e.g. the released
    # emo_space/, made by the lost ResNet): its validation images and final/ space then do not match
    # the vectors the mapper learned from. Refused unless true.
    allow_foreign_space: bool = False
    mapper: MapperSection = Field(default_factory=MapperSection)
    placeholder: str = "<emotion>"
    # Recompute activations in the backward pass (less memory, ~30% more time per step).
    gradient_checkpointing: bool = False  # the UNet
    text_encoder_gradient_checkpointing: bool = False


class EmoGenDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare emoset`")
    properties: list[Literal["object", "scene"]] = Field(default_factory=lambda: ["object", "scene"])
    balanced: Literal["all", "filtered"] = "all"
    alpha: Optional[str] = Field(None, description="alpha.json; null: <prepared>/alpha.json")
    attribute_vocab: Optional[str] = Field(None, description="attribute_vocab.json; null: <prepared>/...")
    resolution: int = Field(512, ge=8)
    center_crop: bool = False  # the original squashes the image to a square
    flip: bool = True
    cache_latents: bool = False
    max_samples: Optional[int] = Field(None, ge=1)
    encoder_batch_size: int = Field(64, ge=1)


class EmoGenLossSection(Section):
    attr_weight: float = Field(0.01, ge=0)
    # Multiplies the cosine similarities before the cross-entropy (the original used raw cosines: 1.0).
    attr_logit_scale: float = Field(1.0, gt=0)
    emo_weight: float = Field(0.0, ge=0)
    # Linear(projection_dim -> 8) over the projected text feature (e.g. the imported
    # emotion_head.safetensors); needed when emo_weight > 0.
    emotion_head: Optional[str] = None
    alpha_threshold: float = Field(0.0, ge=0, le=1)
    # Which hidden state of the text encoder is "the pooled text feature" of the attribute and emotion
    # losses. placeholder: the placeholder token's (the original: its added token had the largest id,
    # so CLIP's argmax pooling read it); eos: end-of-text, CLIP's usual pooled output.
    pooled_token: Literal["placeholder", "eos"] = "placeholder"
    # How attribute names become CLIP text: raw keeps underscores ("christmas_tree", as the original);
    # spaces writes "christmas tree".
    attr_text: Literal["raw", "spaces"] = "raw"


class SampleSection(Section):
    steps: int = Field(50, ge=1)
    guidance: float = Field(7.5, ge=0)
    scheduler: Scheduler = "unipc"
    height: Optional[int] = Field(None, ge=8)
    width: Optional[int] = Field(None, ge=8)
    batch_size: int = Field(4, ge=1)


class ValidationSection(Section):
    emotions: list[str] = Field(default_factory=lambda: list(EMOSET.labels))
    steps: int = Field(25, ge=1)
    seed: int = 0


class EmoGenRecipe(TrainRecipe):
    method: Literal["emogen"] = "emogen"
    model: EmoGenModelSection = Field(default_factory=EmoGenModelSection)
    data: EmoGenDataSection
    loss: EmoGenLossSection = Field(default_factory=EmoGenLossSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=1e-3, weight_decay=1e-2))
