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
    command: str = "emo train"  # the command that runs it; `emo train` lists only its own methods
    # "module:function(recipe)" that checks inputs (model paths, splits, precision on this device)
    # before the run directory is created; raises EmoError. Imports lazily and stays fast.
    preflight: str | None = None

    def load_schema(self):
        return _resolve(self.schema)

    def load_entry(self):
        return _resolve(self.entry)

    def run_preflight(self, recipe) -> None:
        if self.preflight:
            _resolve(self.preflight)(recipe)


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
            preflight="emocli.methods.emotion_encoder.preflight:preflight",
            summary="EmoGen stage 1: image backbone + 768-d emotion representation + 8-way head; "
            "then the per-emotion Gaussian emotion space",
        ),
        Method(
            name="emogen",
            schema="emocli.methods.emogen.config:EmoGenRecipe",
            entry="emocli.methods.emogen.train:main",
            default_recipe="emogen",
            preflight="emocli.methods.emogen.preflight:preflight",
            summary="EmoGen stage 2: the mapping network that turns emotion vectors into a pseudo-word "
            "of a frozen Stable Diffusion",
        ),
        Method(
            name="emoclip",
            schema="emocli.methods.emoclip.config:EmoClipRecipe",
            entry="emocli.methods.emoclip.train:main",
            default_recipe="emoclip",
            preflight="emocli.methods.emoclip.preflight:preflight",
            summary="EmoCLIP: contrastive fine-tune of CLIP's text tower on 'caption + emotion' "
            "(plugs into EmoGen as model.text_encoder)",
        ),
        Method(
            name="emotion-classifier",
            schema="emocli.methods.emotion_classifier.config:EmotionClassifierRecipe",
            entry="emocli.methods.emotion_classifier.train:main",
            default_recipe="emotion-classifier",
            preflight="emocli.methods.emotion_classifier.preflight:preflight",
            summary="The Emo-A classifier: a linear 8-way head on cached CLIP image features of a prepared "
            "EmoSet; validation accuracy and confusion matrix",
        ),
        Method(
            name="ldm",
            schema="emocli.methods.ldm.config:LdmRecipe",
            entry="emocli.methods.ldm.train:main",
            default_recipe="ldm",
            summary="Text-conditional latent diffusion from scratch (seed 004): a UNet on a frozen CLIP text "
            "encoder and SD VAE, trained on captioned images; final/ is a StableDiffusionPipeline",
            preflight="emocli.methods.ldm.preflight:preflight",
        ),
        Method(
            name="eval-generation",
            schema="emocli.methods.eval_generation.config:EvalGenerationRecipe",
            entry="emocli.methods.eval_generation.evaluate:main",
            default_recipe="eval-generation",
            preflight="emocli.methods.eval_generation.preflight:preflight",
            summary="Evaluate an `emo sample` folder: FID, LPIPS, Emo-A, Sem-C, Sem-D, CLIP-I, CLIP-T "
            "(run it with `emo eval generation`)",
            command="emo eval generation",
        ),
        Method(
            name="grpo",
            schema="emocli.methods.grpo.config:GrpoRecipe",
            entry="emocli.methods.grpo.train:main",
            default_recipe="grpo",
            preflight="emocli.methods.grpo.preflight:preflight",
            summary="GRPO fine-tuning of a vision-language model on binary, multiple-choice and misleading "
            "emotion questions (TRL GRPOTrainer; run it with `emo understand grpo`)",
            command="emo understand grpo",
        ),
        Method(
            name="eval-understanding",
            schema="emocli.methods.grpo.config:EvalUnderstandingRecipe",
            entry="emocli.methods.grpo.evaluate:main",
            default_recipe="eval-understanding",
            preflight="emocli.methods.grpo.preflight:preflight_eval",
            summary="Evaluate a base VLM and a GRPO run on the same test questions: accuracy per question type, "
            "8-class accuracy and macro-F1, polarity, confusion (run it with `emo eval understanding`)",
            command="emo eval understanding",
        ),
        Method(
            name="empathdiffuser",
            schema="emocli.methods.empathdiffuser.config:EmpathDiffuserRecipe",
            entry="emocli.methods.empathdiffuser.train:main",
            default_recipe="empathdiffuser",
            summary="EmpathDiffuser: UniDiffuser fine-tuned on AvaMERG to answer a speaker's utterance and face "
            "with a reply, a listener face and the speaker's emotion ([EMO] head)",
            preflight="emocli.methods.empathdiffuser.train:preflight",
        ),
        Method(
            name="eval-empathy",
            schema="emocli.methods.empathdiffuser.config:EvalEmpathyRecipe",
            entry="emocli.methods.empathdiffuser.evaluate:main",
            default_recipe="eval-empathy",
            summary="Evaluate an EmpathDiffuser run on a prepared AvaMERG split: reply BLEU-1..4 (nltk, named), "
            "sacreBLEU, Dist-1/2, listener-face FID, speaker-emotion accuracy / macro-F1 / confusion "
            "(run it with `emo eval empathy`)",
            command="emo eval empathy",
            preflight="emocli.methods.empathdiffuser.evaluate:preflight",
        ),
        Method(
            name="sevlm",
            schema="emocli.methods.sevlm.config:SevlmRecipe",
            entry="emocli.methods.sevlm.train:main",
            default_recipe="sevlm",
            summary="SEVLM: a small emotional vision-language model for art (frozen CLIP ViT-B/16 + GPT-2 with "
            "cross-attention, VAD fusion, VAD and contrastive heads) on ArtEmis: '<emotion> because <explanation>'",
            preflight="emocli.methods.sevlm.preflight:train",
        ),
        Method(
            name="eval-explanation",
            schema="emocli.methods.sevlm.config:EvalExplanationRecipe",
            entry="emocli.methods.sevlm.evaluate:main",
            default_recipe="eval-explanation",
            summary="Evaluate a SEVLM run on prepared ArtEmis: emotion accuracy (strict majority), BLEU-1..4, "
            "METEOR, ROUGE-L, CIDEr, sacreBLEU of the explanation, Unique and Metaphor rates "
            "(run it with `emo eval explanation`)",
            command="emo eval explanation",
            preflight="emocli.methods.sevlm.preflight:evaluate",
        ),
    ]
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise EmoError(
            f"unknown method {name!r}{close_matches(name, METHODS)}; available: {', '.join(METHODS)}"
        )
    return METHODS[name]
