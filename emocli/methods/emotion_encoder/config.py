"""Recipe schema of `emo train emotion-encoder` (torch-free)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from emocli.recipes.schema import Section, TrainRecipe


class BackboneSection(Section):
    # resnet: transformers ResNetModel (pool output); clip: CLIPVisionModel (pooled output).
    name: Literal["resnet", "clip"] = "resnet"
    # Hub id or local folder. null builds the backbone with random weights from `config`.
    pretrained: Optional[str] = "microsoft/resnet-50"
    config: Optional[dict[str, Any]] = None
    freeze: bool = False


class EncoderModelSection(Section):
    backbone: BackboneSection = Field(default_factory=BackboneSection)
    emotion_dim: int = Field(768, ge=1, description="width of fc_1, the emotion representation")
    dropout: float = Field(0.5, ge=0, lt=1)


class EncoderDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare emoset` (its train split "
                                           "trains; val, when present, validates)")
    resize: int = Field(256, ge=8)
    image_size: int = Field(224, ge=8)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    flip: bool = True
    eval_batch_size: int = Field(64, ge=1)
    max_images_per_split: Optional[int] = Field(None, ge=8, description="cap for quick runs")
    space_split: Literal["train", "val", "test", "all"] = "train"


class EmotionEncoderRecipe(TrainRecipe):
    method: Literal["emotion-encoder"] = "emotion-encoder"
    model: EncoderModelSection = Field(default_factory=EncoderModelSection)
    data: EncoderDataSection
