"""Checks of `emo train emoclip` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf


def preflight(recipe) -> None:
    pf.check_all(
        *pf.train_checks(recipe),
        lambda: pf.model_source(recipe.model.pretrained, "model.pretrained", "CLIP"),
        lambda: pf.prepared_splits(recipe.data.prepared, [recipe.data.split], "data.prepared"),
        lambda: pf.local_path(recipe.data.captions, "data.captions", "captions file", kind="file"),
    )
