"""Checks of `emo understand grpo` and `emo eval understanding` before their run directory exists
(see emocli/preflight.py)."""

from __future__ import annotations

import importlib.util

from emocli import preflight as pf
from emocli.errors import EmoError


def _vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise EmoError("grpo.use_vllm: vllm is not installed (pip install vllm), or set grpo.use_vllm=false")


def preflight(recipe) -> None:
    g = recipe.grpo
    pf.check_all(
        lambda: pf.precision(recipe.launch.mixed_precision),
        lambda: pf.trackers(g.report_to, "grpo.report_to"),
        lambda: pf.model_source(recipe.model.pretrained, "model.pretrained", "vision-language model"),
        lambda: pf.emoset_source(recipe.data.prepared, ["train"] if recipe.data.keep_official_split else [],
                                 "data.prepared"),
        lambda: pf.local_path(recipe.data.confusion, "data.confusion", "confusion matrix", kind="file"),
        *([_vllm] if g.use_vllm else []),
    )


def preflight_eval(recipe) -> None:
    m, d = recipe.models, recipe.data
    pf.check_all(
        lambda: pf.device(m.device, "models.device"),
        lambda: pf.model_source(m.base, "models.base", "base model"),
        lambda: pf.local_path(m.tuned, "models.tuned", "tuned model (a GRPO run or a model folder)", kind="folder"),
        lambda: pf.local_path(d.questions, "data.questions", "questions (a GRPO run or a JSONL file)"),
        *([lambda: pf.emoset_source(d.build.prepared, [], "data.build.prepared")] if d.build else []),
    )
