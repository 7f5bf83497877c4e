"""Checks of `emo train emogen` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf
from emocli.errors import EmoError


def preflight(recipe) -> None:
    m, d = recipe.model, recipe.data

    def prepared_inputs():
        prepared = pf.prepared_splits(d.prepared, [], "data.prepared")
        pf.local_path(d.alpha or str(prepared.path / "alpha.json"), "data.alpha",
                      "alpha table (`emo data alpha`)", kind="file")
        pf.local_path(d.attribute_vocab or str(prepared.path / "attribute_vocab.json"), "data.attribute_vocab",
                      "attribute vocabulary", kind="file")
        suffix = "_filtered" if d.balanced == "filtered" else ""
        for prop in d.properties:
            pf.local_path(str(prepared.path / "balanced" / f"{prop}{suffix}.json"), "data.properties",
                          "balanced list", kind="file")

    def emotion_encoder():
        if not m.emotion_encoder:
            raise EmoError("model.emotion_encoder must name an `emo train emotion-encoder` run (or its final/model)")
        pf.local_path(m.emotion_encoder, "model.emotion_encoder", "emotion encoder run (`emo train emotion-encoder`)",
                      kind="folder")

    def emotion_head():
        if recipe.loss.emo_weight > 0:
            if not recipe.loss.emotion_head:
                raise EmoError("loss.emo_weight > 0 needs loss.emotion_head (e.g. an imported "
                               "emotion_head.safetensors)")
            pf.local_path(recipe.loss.emotion_head, "loss.emotion_head", "emotion head", kind="file")

    def clip():
        if recipe.loss.attr_weight > 0 or recipe.loss.emo_weight > 0:  # the attribute / emotion losses use it
            pf.model_source(m.clip, "model.clip", "CLIP")

    pf.check_all(
        *pf.train_checks(recipe),
        lambda: pf.model_source(m.pretrained, "model.pretrained", "Stable Diffusion"),
        lambda: pf.model_source(m.text_encoder, "model.text_encoder", "text encoder"),
        clip,
        lambda: pf.local_path(m.emotion_space, "model.emotion_space", "emotion space"),
        emotion_encoder,
        emotion_head,
        prepared_inputs,
    )
