"""Methods by short name: where each one's recipe schema and entry point live (torch-free).

Plain dict, resolved by name; recipes never name import paths. A method's schema module must
not import torch, so that `emo recipes validate` stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from emocli.errors import EmoError, close_matches


@dataclass(frozen=True)
class Method:
    name: str
    schema: str  # "module:Class" of the pydantic recipe
    entry: str  # "module:function(run: Run, resume: bool)" run by `emo train` / the launch worker
    default_recipe: str  # name under recipes/
    summary: str

    def load_schema(self):
        return _resolve(self.schema)

    def load_entry(self):
        return _resolve(self.entry)


def _resolve(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            name="emotion-encoder",
            schema="emocli.methods.emotion_encoder.config:EmotionEncoderRecipe",
            entry="emocli.methods.emotion_encoder.train:main",
            default_recipe="emotion-encoder",
            summary="EmoGen stage 1: image backbone + 768-d emotion representation + 8-way head; "
            "then the per-emotion Gaussian emotion space",
        ),
        Method(
            name="emogen",
            schema="emocli.methods.emogen.config:EmoGenRecipe",
            entry="emocli.methods.emogen.train:main",
            default_recipe="emogen",
            summary="EmoGen stage 2: the mapping network that turns emotion vectors into a pseudo-word "
            "of a frozen Stable Diffusion",
        ),
        Method(
            name="emoclip",
            schema="emocli.methods.emoclip.config:EmoClipRecipe",
            entry="emocli.methods.emoclip.train:main",
            default_recipe="emoclip",
            summary="EmoCLIP: contrastive fine-tune of CLIP's text tower on 'caption + emotion' "
            "(plugs into EmoGen as model.text_encoder)",
        ),
    ]
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise EmoError(
            f"unknown method {name!r}{close_matches(name, METHODS)}; available: {', '.join(METHODS)}"
        )
    return METHODS[name]
