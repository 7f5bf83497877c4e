"""Recipe schema of `emo eval generation` (torch-free).

Sections: `run`, `data` (what is evaluated against what), `models` (every backbone: a Hub id or a local
path; null = not configured, so the metrics that need it are skipped with a note), `metrics` (which
metrics, pairs, FID preprocessing, batch size) and `report` (paper rows, HTML).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator

from emocli.recipes.schema import Recipe, Section

MetricName = Literal["fid", "lpips", "emo_a", "sem_c", "sem_d", "clip_i", "clip_t"]
METRIC_NAMES: tuple[str, ...] = ("fid", "lpips", "emo_a", "sem_c", "sem_d", "clip_i", "clip_t")


class EvalDataSection(Section):
    samples: str = Field(..., description="a folder written by `emo sample`: <emotion>/<name>.png + .json, or "
                         "prompts/<name>.png + .json (LDM)")
    prepared: str = Field(..., description="a prepared EmoSet folder (`emo data prepare emoset`), or a caption "
                          "folder (`emo data prepare captions`) for prompt samples")
    # "all": every image of the emotion, whatever its split (EmoGen's FID reference); or one split.
    reference_split: Literal["all", "train", "val", "test"] = "all"
    max_reference_per_emotion: Optional[int] = Field(None, ge=2, description="cap for quick runs (first N)")
    max_samples_per_emotion: Optional[int] = Field(None, ge=1)
    # Evaluate only these emotions (null: every emotion folder in `samples`).
    emotions: Optional[list[str]] = None
    # Per-image features of the generated images (safetensors, keyed by path + mtime). null: RUN_DIR/cache.
    feature_cache: Optional[str] = None
    # Per-emotion reference statistics (FID mean/cov, CLIP mean embedding). null: PREPARED/eval-cache.
    reference_cache: Optional[str] = None


class EvalModelsSection(Section):
    # CLIP for Emo-A, Sem-D, CLIP-I, CLIP-T (EmoGen: ViT-L/14). Hub id or local folder.
    clip: Optional[str] = "openai/clip-vit-large-patch14"
    # FID Inception-v3: pt_inception-2015-12-05-6726825d.pth (pytorch-fid) or
    # weights-inception-2015-12-05-6726825d.pth (torch-fidelity), or a .safetensors conversion.
    inception: Optional[str] = None
    # LPIPS v0.1 AlexNet: torchvision alexnet-owt-7be5be79.pth + the lpips wheel's weights/v0.1/alex.pth.
    lpips_backbone: Optional[str] = None
    lpips_heads: Optional[str] = None
    # Sem-C: Places365 ResNet-50 (resnet50_places365.pth.tar) and ImageNet ResNet-50 (resnet50-0676ba61.pth).
    scene_classifier: Optional[str] = None
    object_classifier: Optional[str] = None
    # Emo-A head: EmoGen's time_2023-11-12_03-29-best.pth, a head .safetensors, or an
    # `emo train emotion-classifier` run directory.
    emotion_head: Optional[str] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvalMetricsSection(Section):
    # "auto": every metric whose weights are configured (the others are skipped with a note);
    # a list: exactly these, and a missing backbone for one of them is an error.
    compute: Union[Literal["auto"], list[MetricName]] = "auto"
    # Random distinct within-emotion pairs for LPIPS and Sem-D (EmoGen: 10); the same pairs for both.
    pairs_per_emotion: int = Field(10, ge=1)
    pair_seed: int = 0
    # FID preprocessing: tf (TF-FID / torch-fidelity / EmoGen), pytorch (pytorch-fid), clean (clean-fid resize).
    fid_preprocess: Literal["tf", "pytorch", "clean"] = "tf"
    # Tr((S1 S2)^1/2): auto = exact low-rank form when there are fewer generated images than feature
    # dimensions, else symmetric; or one of emocli.metrics.fid.frechet_distance's methods.
    fid_method: Literal["auto", "symmetric", "eigvals", "sqrtm"] = "auto"
    # "correct": [-1, 1] inputs; "raw": EmoGen's [0, 1]-into-LPIPS mistake, for comparison only.
    lpips_value_range: Literal["correct", "raw"] = "correct"
    # Square size every image is resized to for LPIPS (null: native size; a pair must match).
    lpips_resize: Optional[int] = Field(None, ge=16)
    clip_i_pairing: Literal["all_pairs", "mean_embedding"] = "all_pairs"
    # CLIP-T text per image; fields {emotion}, {object} and {prompt} come from the sample's .json sidecar.
    clip_t_template: str = "an image of {emotion} {object}"
    batch_size: int = Field(32, ge=1)
    # Seeded percentile bootstrap intervals (stratified by emotion; docs/metrics.md). Resamples per metric
    # (0: no intervals); FID has its own cap since every resample is one FID per emotion plus the pooled one.
    bootstrap_resamples: int = Field(200, ge=0, le=10000)
    bootstrap_fid_resamples: int = Field(50, ge=0, le=2000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_seed: int = 0


class EvalReportSection(Section):
    paper_rows: bool = True
    html: bool = True
    images_per_emotion: int = Field(8, ge=0, description="image grid width in report.html")
    # true: thumbnails embedded as base64 (self-contained); false: relative links to the samples.
    embed_images: bool = True


class EvalGenerationRecipe(Recipe):
    method: Literal["eval-generation"] = "eval-generation"
    data: EvalDataSection
    models: EvalModelsSection = Field(default_factory=EvalModelsSection)
    metrics: EvalMetricsSection = Field(default_factory=EvalMetricsSection)
    report: EvalReportSection = Field(default_factory=EvalReportSection)

    @field_validator("launch")
    @classmethod
    def _one_process(cls, launch):
        if launch.num_processes != 1 or launch.accelerate_config is not None:
            raise ValueError("emo eval generation runs in one process: keep num_processes=1 and "
                             "accelerate_config=null (models.device picks the device)")
        return launch
