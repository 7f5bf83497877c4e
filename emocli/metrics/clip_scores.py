"""CLIP-I and CLIP-T from a transformers ``CLIPModel`` and its processor.

Conventions (CLIP scores are not standardised; every number `emo` reports says which one it is):

- **Features**: ``CLIPModel.get_image_features`` / ``get_text_features`` (the projected embeddings). With
  transformers >= 5 these return a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected
  embedding; both forms are handled. `clip_image_features` returns the raw (unnormalised) embeddings, which
  EmoGen's Emo-A classifier and Sem-D use, and their L2-normalised versions, which cosines use.
- **Image preprocessing**: the processor's own (CLIP: resize shortest side to 224 bicubic, centre-crop 224,
  CLIP mean/std). Images are handed to it as uint8 PIL images: float tensors are taken as [0, 1] and rounded
  to uint8 first, so the processor never rescales an already-rescaled image twice.
- **CLIP-I** (image-image), `pairing`:

  * ``"all_pairs"`` (default; DreamBooth / Textual-Inversion evaluator): mean cosine over every
    (generated, reference) pair = ``mean_i(g_i) . mean_j(r_j)`` of the normalised embeddings;
  * ``"matched"``: mean cosine of ``(generated[i], reference[i])`` (same number of images);
  * ``"mean_embedding"``: cosine between the *re-normalised* mean generated and mean reference embeddings
    (a set-to-set similarity, always >= the all-pairs value).
  Reported unscaled, in [-1, 1].
- **CLIP-T** (image-text; image i with prompt i), three named numbers:

  * ``clip_t``: the raw mean cosine (DreamBooth / TI convention, e.g. ~0.30);
  * ``clipscore``: Hessel et al. 2021's CLIPScore, ``mean(2.5 * max(cos, 0))`` (range 0..2.5);
  * ``clip_score_100``: torchmetrics ``CLIPScore``'s convention, ``max(100 * mean(cos), 0)``.
  Prompts are tokenised with truncation at the tokenizer's maximum length (77 for CLIP); Hessel's
  "A photo depicts " prefix is applied only when `prompt_prefix` is given.

The model is whatever the caller loads (EmoGen: ``openai/clip-vit-large-patch14``); local copies load with
``CLIPModel.from_pretrained(path)`` — no weights are fetched here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from emocli.errors import EmoError
from emocli.metrics.common import to_uint8_chw

CLIPSCORE_W = 2.5
CLIP_I_PAIRINGS = ("all_pairs", "matched", "mean_embedding")


class ClipFeatures(NamedTuple):
    """`features`: raw projected CLIP embeddings (N, D), float32 on CPU; `normalized`: the same, L2-normalised."""

    features: torch.Tensor
    normalized: torch.Tensor


def _embedding(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None and isinstance(output, (tuple, list)):
        pooled = output[1] if len(output) > 1 else output[0]
    if pooled is None:
        raise EmoError(f"cannot find the embedding in a {type(output).__name__} returned by the CLIP model")
    return pooled


def _image_processor(processor):
    return getattr(processor, "image_processor", None) or processor


def _tokenizer(processor):
    return getattr(processor, "tokenizer", None) or processor


def _as_pil_list(images) -> list:
    from PIL import Image

    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    out = []
    for image in images:
        if isinstance(image, Image.Image):
            out.append(image.convert("RGB"))
        else:
            out.append(Image.fromarray(to_uint8_chw(image).permute(1, 2, 0).numpy()))
    return out


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _finish(chunks: list[torch.Tensor], what: str) -> ClipFeatures:
    if not chunks:
        raise EmoError(f"no {what} given")
    features = torch.cat(chunks).float()
    return ClipFeatures(features, F.normalize(features, dim=-1))


@torch.no_grad()
def clip_image_features(model, processor, images, batch_size: int = 32) -> ClipFeatures:
    """CLIP image embeddings of `images` (PIL, arrays, uint8 or [0, 1] float tensors), `batch_size` at a time."""
    device = _model_device(model)
    dtype = next(model.parameters()).dtype
    image_processor = _image_processor(processor)
    chunks = []
    n = len(images)
    for start in range(0, n, max(1, int(batch_size))):
        pil = _as_pil_list(images[start:start + batch_size])
        pixel_values = image_processor(images=pil, return_tensors="pt")["pixel_values"]
        chunks.append(_embedding(model.get_image_features(pixel_values=pixel_values.to(device, dtype))).cpu())
    return _finish(chunks, "images")


@torch.no_grad()
def clip_text_features(model, processor, texts: Sequence[str], batch_size: int = 64) -> ClipFeatures:
    """CLIP text embeddings of `texts` (padded, truncated at the tokenizer's maximum length)."""
    if isinstance(texts, str):
        texts = [texts]
    device = _model_device(model)
    tokenizer = _tokenizer(processor)
    max_length = getattr(tokenizer, "model_max_length", None)
    if max_length is None or max_length > 10_000:
        max_length = getattr(getattr(getattr(model, "config", None), "text_config", None),
                             "max_position_embeddings", 77)
    chunks = []
    for start in range(0, len(texts), max(1, int(batch_size))):
        tokens = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                           max_length=max_length, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        chunks.append(_embedding(model.get_text_features(**inputs)).cpu())
    return _finish(chunks, "texts")


def clip_i(generated: torch.Tensor, reference: torch.Tensor, pairing: str = "all_pairs") -> dict:
    """CLIP-I from embeddings (raw or normalised; they are normalised here). See the module docstring."""
    g = F.normalize(torch.as_tensor(generated).double(), dim=-1)
    r = F.normalize(torch.as_tensor(reference).double(), dim=-1)
    if pairing == "all_pairs":
        value = float((g @ r.T).mean())
    elif pairing == "matched":
        if g.shape[0] != r.shape[0]:
            raise EmoError(f"pairing='matched' needs as many generated as reference images "
                           f"({g.shape[0]} vs {r.shape[0]})")
        value = float((g * r).sum(-1).mean())
    elif pairing == "mean_embedding":
        value = float(F.cosine_similarity(g.mean(0), r.mean(0), dim=0))
    else:
        raise EmoError(f"unknown CLIP-I pairing {pairing!r}; valid: {', '.join(CLIP_I_PAIRINGS)}")
    return {"clip_i": value, "pairing": pairing, "n_generated": int(g.shape[0]), "n_reference": int(r.shape[0])}


def clip_t(image_features: torch.Tensor, text_features: torch.Tensor) -> dict:
    """CLIP-T from embeddings of image i and prompt i (or one prompt for all images)."""
    im = F.normalize(torch.as_tensor(image_features).double(), dim=-1)
    tx = F.normalize(torch.as_tensor(text_features).double(), dim=-1)
    if tx.shape[0] == 1 and im.shape[0] > 1:
        tx = tx.expand(im.shape[0], -1)
    if tx.shape[0] != im.shape[0]:
        raise EmoError(f"CLIP-T needs one prompt per image (or a single prompt): {im.shape[0]} images, "
                       f"{tx.shape[0]} prompts")
    cos = (im * tx).sum(-1)
    mean_cos = float(cos.mean())
    return {
        "clip_t": mean_cos,
        "clipscore": float((CLIPSCORE_W * cos.clamp(min=0)).mean()),
        "clip_score_100": max(100.0 * mean_cos, 0.0),
        "per_image": cos.tolist(),
        "n": int(cos.shape[0]),
    }


def clip_i_score(model, processor, generated, reference, pairing: str = "all_pairs", batch_size: int = 32) -> dict:
    """CLIP-I between generated and reference images (see `clip_i`)."""
    g = clip_image_features(model, processor, generated, batch_size)
    r = clip_image_features(model, processor, reference, batch_size)
    return clip_i(g.normalized, r.normalized, pairing)


def clip_t_score(model, processor, images, prompts: Sequence[str] | str, batch_size: int = 32,
                 prompt_prefix: str = "") -> dict:
    """CLIP-T between images and their prompts (see `clip_t`); `prompt_prefix` e.g. "A photo depicts "."""
    if isinstance(prompts, str):
        prompts = [prompts]
    im = clip_image_features(model, processor, images, batch_size)
    tx = clip_text_features(model, processor, [prompt_prefix + p for p in prompts], batch_size)
    out = clip_t(im.normalized, tx.normalized)
    out["prompt_prefix"] = prompt_prefix
    return out


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """All-pairs cosine similarities (float64 numpy) between two sets of embeddings."""
    return (F.normalize(torch.as_tensor(a).double(), dim=-1) @ F.normalize(torch.as_tensor(b).double(), dim=-1).T).numpy()
