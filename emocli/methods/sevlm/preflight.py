"""Checks of `emo train sevlm` and `emo eval explanation` before their run directory exists
(see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf


def _prepared(path: str, images: str | None) -> None:
    from emocli.data.artemis import PreparedArtEmis

    PreparedArtEmis(path, images)


def _lexicon(path: str) -> None:
    from emocli.methods.sevlm.vad import read_lexicon

    read_lexicon(path)


def _java(recipe) -> None:
    from emocli.errors import EmoError
    from emocli.metrics.text import java_available

    if (recipe.metrics.meteor or recipe.metrics.ptb_tokenizer) and not java_available():
        raise EmoError("metrics.meteor / metrics.ptb_tokenizer need Java (`java` on PATH, version 8+); install a "
                       "JRE or set metrics.meteor=false metrics.ptb_tokenizer=false")


def train(recipe) -> None:
    m = recipe.model
    pf.check_all(
        *pf.train_checks(recipe),
        lambda: _prepared(recipe.data.prepared, recipe.data.images),
        lambda: pf.model_source(m.vision, "model.vision", "CLIP vision model"),
        lambda: pf.model_source(m.decoder, "model.decoder", "GPT-2 decoder"),
        lambda: pf.model_source(m.tokenizer, "model.tokenizer", "GPT-2 tokenizer"),
        *([lambda: _lexicon(m.vad_lexicon)] if m.vad_fusion or m.vad_head else []),
    )


def evaluate(recipe) -> None:
    from emocli.methods.sevlm.evaluate import resolve_model_dir

    pf.check_all(
        lambda: pf.device(recipe.device, "device"),
        lambda: _prepared(recipe.data.prepared, recipe.data.images),
        lambda: resolve_model_dir(recipe.model.run, recipe.model.weights),
        lambda: _java(recipe),
    )
