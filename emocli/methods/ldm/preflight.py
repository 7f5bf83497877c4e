"""Checks of an `emo train ldm` recipe before the run directory is created (fast, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

from emocli.errors import EmoError


def _local(name: str) -> bool:
    return str(name).startswith((".", "/", "~")) or Path(name).expanduser().exists()


def preflight(recipe) -> None:
    from emocli.data.captions import PreparedCaptions

    prepared = PreparedCaptions(recipe.data.prepared)
    counts = prepared.manifest.get("counts", {}).get("per_split", {})
    if not counts.get("train"):
        raise EmoError(f"data.prepared {prepared.path} has an empty train split (splits: {json.dumps(counts)})")
    m = recipe.model
    for key, name in (("model.text_encoder", m.text_encoder), ("model.vae", m.vae), ("model.unet", m.unet)):
        if name and _local(name) and not Path(name).expanduser().exists():
            raise EmoError(f"{key} {name!r} does not exist")
    loss = recipe.loss
    if loss.lpips_weight > 0:
        for key, path in (("loss.lpips_backbone", loss.lpips_backbone), ("loss.lpips_heads", loss.lpips_heads)):
            if not Path(str(path)).expanduser().is_file():
                raise EmoError(f"{key} {path!r} is not a file (LPIPS weights are needed when loss.lpips_weight > 0)")
    if recipe.launch.mixed_precision != "no" and recipe.launch.accelerate_config is None:
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            if not torch.cuda.is_available():
                raise EmoError(f"launch.mixed_precision={recipe.launch.mixed_precision} needs a GPU; on a CPU set "
                               f"launch.mixed_precision=no (or use recipes/tiny/ldm.yaml)")
