"""Recipe schema of `emo train emotion-classifier` (torch-free).

The Emo-A classifier of EmoGen (reference/emogen.md section 6): raw CLIP ``get_image_features``
embeddings (ViT-L/14: 768-d) and one ``Linear(D -> 8)`` head (`emocli.metrics.emotion.EmotionHead`),
trained on EmoSet only. Image features are extracted once per image and cached in the run directory.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from emocli.recipes.schema import Section, TrainRecipe

Split = Literal["train", "val", "test"]


class ClassifierModelSection(Section):
    # Hub id or local folder of a transformers CLIPModel (+ its processor).
    clip: str = "openai/clip-vit-large-patch14"
    # Start from these head weights: EmoGen's released time_2023-11-12_03-29-best.pth, a head
    # .safetensors, or an earlier `emo train emotion-classifier` run. null: random init.
    init_head: Optional[str] = None
    # Also score this head on the same validation features (e.g. the released one), for comparison.
    reference_head: Optional[str] = None


class ClassifierDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare emoset` (records.jsonl)")
    train_split: Split = "train"
    # null: no validation; a split without images falls back to none, with a warning.
    val_split: Optional[Split] = "val"
    max_images_per_split: Optional[int] = Field(None, ge=8, description="cap for quick runs (round-robin "
                                                                         "over emotions)")
    feature_batch_size: int = Field(64, ge=1)
    # Where the per-image CLIP features are cached (safetensors). null: RUN_DIR/cache.
    feature_cache: Optional[str] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Also train this many fold heads, each without one fold of the training images, so that `emo data
    # alpha --classifier RUN` scores every image with a head that never trained on it (cross-fitting;
    # emocli/methods/emotion_classifier/crossfit.py). null: no fold heads (in-sample scores only).
    cross_fit_folds: Optional[int] = Field(5, ge=2)


class EmotionClassifierRecipe(TrainRecipe):
    method: Literal["emotion-classifier"] = "emotion-classifier"
    model: ClassifierModelSection = Field(default_factory=ClassifierModelSection)
    data: ClassifierDataSection
