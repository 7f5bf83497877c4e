"""Recipe schema of `emo train emoclip` (torch-free)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from emocli.recipes.schema import OptimSection, Section, TrainRecipe


class EmoClipModelSection(Section):
    # A CLIPModel (Hub id or folder): CLIP ViT-L/14 for SD 1.5, whose text tower is SD's text encoder.
    pretrained: str = "openai/clip-vit-large-patch14"
    gradient_checkpointing: bool = False


class EmoClipDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare emoset`")
    # Captions: JSON {image_id: caption} or JSONL lines {"id": ..., "caption": ...}. null builds
    # "a photo of <object> in <scene>" from the EmoSet annotations (when no captioner was run).
    captions: Optional[str] = None
    split: Literal["train", "val", "test"] = "train"
    # The fork concatenated caption + emotion with no separator; we join with this string.
    separator: str = " "
    max_samples: Optional[int] = Field(None, ge=2)
    feature_batch_size: int = Field(64, ge=1)


class EmoClipRecipe(TrainRecipe):
    method: Literal["emoclip"] = "emoclip"
    model: EmoClipModelSection = Field(default_factory=EmoClipModelSection)
    data: EmoClipDataSection
    # The fork: AdamW 5e-5, weight decay 1e-2, constant schedule.
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=5e-5, weight_decay=1e-2))
