"""Checks of `emo train sevlm` / `emo eval explanation` inputs before a run directory exists (fast, no torch
at import)."""

from __future__ import annotations

from pathlib import Path

from emocli.errors import EmoError


def _check_model_path(key: str, value: str | None) -> None:
    """A value that looks like a local path must exist; `org/name` or `name` may be a Hub id."""
    if not value:
        return
    path = Path(value).expanduser()
    if path.exists():
        return
    parent = path.parent
    looks_local = value.startswith(("/", ".", "~")) or value.count("/") >= 2 or (
        str(parent) != "." and parent.is_dir())
    if looks_local:
        raise EmoError(f"{key} {value} does not exist; point it at a local model folder")


def check_precision(recipe) -> None:
    if recipe.launch.mixed_precision != "no":
        import torch

        if not torch.cuda.is_available():
            raise EmoError(f"launch.mixed_precision={recipe.launch.mixed_precision} needs a GPU; this machine has "
                           f"none (set launch.mixed_precision=no)")


def train(recipe) -> None:
    from emocli.data.artemis import PreparedArtEmis
    from emocli.methods.sevlm.vad import read_lexicon

    PreparedArtEmis(recipe.data.prepared, recipe.data.images)
    for key in ("vision", "decoder", "tokenizer"):
        _check_model_path(f"model.{key}", getattr(recipe.model, key))
    if recipe.model.vad_fusion or recipe.model.vad_head:
        read_lexicon(recipe.model.vad_lexicon)
    check_precision(recipe)


def evaluate(recipe) -> None:
    from emocli.data.artemis import PreparedArtEmis
    from emocli.methods.sevlm.evaluate import resolve_model_dir

    PreparedArtEmis(recipe.data.prepared, recipe.data.images)
    resolve_model_dir(recipe.model.run, recipe.model.weights)
