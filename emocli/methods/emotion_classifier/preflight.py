"""Checks of `emo train emotion-classifier` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf


def preflight(recipe) -> None:
    m, d = recipe.model, recipe.data
    pf.check_all(
        *pf.train_checks(recipe),
        lambda: pf.device(d.device, "data.device"),
        lambda: pf.model_source(m.clip, "model.clip", "CLIP"),
        lambda: pf.local_path(m.init_head, "model.init_head", "head weights"),
        lambda: pf.local_path(m.reference_head, "model.reference_head", "head weights"),
        lambda: pf.prepared_splits(d.prepared, [d.train_split], "data.prepared"),
    )
