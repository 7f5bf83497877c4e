"""Recipe schemas of `emo train sevlm` and `emo eval explanation` (torch-free)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from emocli.recipes.schema import OptimSection, Recipe, Section, TrainRecipe


class SevlmModelSection(Section):
    # Local folders (or Hub ids when online). null builds that part with random weights from *_config.
    vision: Optional[str] = Field("openai/clip-vit-base-patch16", description="CLIP (vision) model folder")
    vision_config: Optional[dict[str, Any]] = None
    decoder: Optional[str] = Field("distilgpt2", description="GPT-2 model folder")
    decoder_config: Optional[dict[str, Any]] = None
    tokenizer: Optional[str] = Field(None, description="GPT-2 tokenizer folder; default: model.decoder")
    image_size: int = Field(224, ge=8)
    prompt: str = " the emotion is"
    max_length: int = Field(30, ge=8, description="tokens per training sequence (truncated)")
    # The three SEVLM additions, each switchable for ablations.
    vad_fusion: bool = True
    vad_head: bool = True
    contrastive_head: bool = True
    vad_lexicon: Optional[str] = Field(None, description="NRC-VAD text file (word, V, A, D per line)")
    vad_layers: int = Field(3, ge=1)
    vad_heads: int = Field(1, ge=1)
    vad_ffn: int = Field(128, ge=1)
    vad_dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _lexicon_when_needed(self):
        if (self.vad_fusion or self.vad_head) and not self.vad_lexicon:
            raise ValueError("model.vad_lexicon (an NRC-VAD text file) is needed by model.vad_fusion / "
                             "model.vad_head; set it or turn both off")
        if self.vision is None and self.vision_config is None:
            raise ValueError("model.vision is null: give model.vision_config to build a random CLIP vision tower")
        if self.decoder is None and (self.decoder_config is None or self.tokenizer is None):
            raise ValueError("model.decoder is null: give model.decoder_config and model.tokenizer")
        return self


class LossWeights(Section):
    lm: float = Field(1.0, ge=0)
    vad: float = Field(1.0, ge=0)
    contrastive: float = Field(1.0, ge=0)


class SevlmOptimSection(OptimSection):
    vad_lr: float = Field(4e-5, gt=0, description="learning rate of the VAD encoder and fusion layer")


class SevlmDataSection(Section):
    prepared: str = Field(..., description="folder written by `emo data prepare artemis`")
    images: Optional[str] = Field(None, description="WikiArt folder; default: the one recorded at prepare time")
    max_train_artworks: Optional[int] = Field(None, ge=2, description="cap for quick runs")
    max_eval_images: Optional[int] = Field(None, ge=1, description="validation images decoded per evaluation")
    eval_batch_size: int = Field(64, ge=1)


class DecodeSection(Section):
    max_new_tokens: int = Field(25, ge=1)
    greedy: bool = True
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)


class SevlmRecipe(TrainRecipe):
    method: Literal["sevlm"] = "sevlm"
    model: SevlmModelSection = Field(default_factory=SevlmModelSection)
    loss: LossWeights = Field(default_factory=LossWeights)
    data: SevlmDataSection
    decode: DecodeSection = Field(default_factory=DecodeSection)
    optim: SevlmOptimSection = Field(default_factory=SevlmOptimSection)


class ExplanationModelSection(Section):
    run: str = Field(..., description="an `emo train sevlm` run directory (or an exported model folder)")
    weights: Literal["best", "final"] = "best"


class ExplanationMetricsSection(Section):
    meteor: bool = True  # needs Java
    ptb_tokenizer: bool = True  # needs Java; false: a lower-cased word split (scores differ slightly)
    reference_rows: bool = True  # the digest's third-party SEVLM / NLX-GPT numbers, marked as such


class ExplanationDataSection(Section):
    prepared: str = Field(..., description="folder written by `emo data prepare artemis`")
    images: Optional[str] = None
    split: Literal["train", "val", "test"] = "test"
    max_images: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)


class EvalExplanationRecipe(Recipe):
    method: Literal["eval-explanation"] = "eval-explanation"
    model: ExplanationModelSection
    data: ExplanationDataSection
    decode: DecodeSection = Field(default_factory=DecodeSection)
    metrics: ExplanationMetricsSection = Field(default_factory=ExplanationMetricsSection)
    device: Literal["auto", "cpu", "cuda"] = "auto"
