"""Checks of `emo eval generation` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from pathlib import Path

from emocli import preflight as pf
from emocli.errors import EmoError


def preflight(recipe) -> None:
    d, models = recipe.data, recipe.models

    def samples():
        folder = pf.local_path(d.samples, "data.samples", "samples folder (`emo sample --out`)", kind="folder")
        if folder is not None and not any(p.is_dir() and any(p.glob("*.png")) for p in Path(folder).iterdir()):
            raise EmoError(f"data.samples: {folder} holds no <emotion>/*.png images (write them with `emo sample`)")

    weights = [(key, getattr(models, key)) for key in ("inception", "lpips_backbone", "lpips_heads",
                                                       "scene_classifier", "object_classifier", "emotion_head")]
    pf.check_all(
        lambda: pf.device(models.device, "models.device"),
        samples,
        lambda: pf.prepared_splits(d.prepared, [] if d.reference_split == "all" else [d.reference_split],
                                   "data.prepared"),
        lambda: pf.model_source(models.clip, "models.clip", "CLIP"),
        *[(lambda key=key, value=value: pf.local_path(value, f"models.{key}", "weights")) for key, value in weights],
    )
