"""Checks of `emo train emotion-encoder` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf


def preflight(recipe) -> None:
    backbone = recipe.model.backbone
    pf.check_all(
        *pf.train_checks(recipe),
        lambda: pf.model_source(backbone.pretrained, "model.backbone.pretrained", f"{backbone.name} backbone"),
        lambda: pf.prepared_splits(recipe.data.prepared, sorted({"train", recipe.data.space_split} - {"all"}),
                                   "data.prepared"),
    )
