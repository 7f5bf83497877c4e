"""Which weights a metric used, and whether they are the reference ones the metric is named after.

`check_weights(kind, path, state)` returns ``{"kind", "path", "sha256", "status", "why"}`` where status is

- ``"verified"``: the file's SHA-256 starts with the published prefix (the 8 hex digits in the released
  file's name: pytorch-fid / torch-fidelity ``...-6726825d.pth``, torchvision ``alexnet-owt-7be5be79.pth``,
  ``resnet50-0676ba61.pth``; EmoGen's released Emo-A head, hashed here);
- ``"signature"``: no checksum applies (a ``.safetensors`` conversion, or a network published without one)
  but the architecture signature of the reference network matches (e.g. the FID network's 1008-class
  ``fc``, Places365's 365 classes). The values themselves are not checked;
- ``"unverified"``: a checksum that differs, or a signature that does not match (random test weights, a
  fine-tuned network, torchvision's ImageNet Inception instead of the FID one). Reports flag these in the
  metric's Table-1 row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

# kind -> (published SHA-256 prefix or None, reference description)
REFERENCE = {
    "inception": ("6726825d", "FID Inception-v3 2015-12-05 pool3 (pt_inception-2015-12-05-6726825d.pth)"),
    "lpips_backbone": ("7be5be79", "torchvision AlexNet IMAGENET1K_V1 (alexnet-owt-7be5be79.pth)"),
    "lpips_heads": (None, "LPIPS v0.1 alex heads (lpips weights/v0.1/alex.pth)"),
    "scene_classifier": (None, "Places365 ResNet-50 (resnet50_places365.pth.tar)"),
    "object_classifier": ("0676ba61", "torchvision ResNet-50 IMAGENET1K_V1 (resnet50-0676ba61.pth)"),
    "emotion_head": ("80f72314", "EmoGen's released Emo-A head (time_2023-11-12_03-29-best.pth)"),
}


def sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _shape(state: Mapping, key: str):
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def signature(kind: str, state: Mapping) -> tuple[bool, str]:
    """(matches, what was compared) for the architecture signature of the reference network of `kind`."""
    if kind == "inception":
        fc = _shape(state, "fc.weight")
        return fc == (1008, 2048), f"fc.weight {fc} (the 2015-12-05 FID network has 1008 classes: (1008, 2048))"
    if kind == "lpips_backbone":
        widths = tuple((_shape(state, f"features.{i}.weight") or (0,))[0] for i in (0, 3, 6, 8, 10))
        return widths == (64, 192, 384, 256, 256), f"AlexNet conv widths {widths} (reference: 64, 192, 384, 256, 256)"
    if kind == "lpips_heads":
        shapes = tuple((_shape(state, f"lin{k}.model.1.weight") or (0, 0))[1] for k in range(5))
        nonneg = all(float(state[f"lin{k}.model.1.weight"].min()) >= 0 for k in range(5)
                     if f"lin{k}.model.1.weight" in state)
        return shapes == (64, 192, 384, 256, 256) and nonneg, \
            f"head widths {shapes} (reference: 64, 192, 384, 256, 256), non-negative: {nonneg}"
    if kind in ("scene_classifier", "object_classifier"):
        classes = 365 if kind == "scene_classifier" else 1000
        fc, conv1 = _shape(state, "fc.weight"), _shape(state, "conv1.weight")
        blocks = sum(1 for k in state if k.endswith(".conv1.weight") and k.startswith("layer"))
        ok = fc == (classes, 2048) and conv1 == (64, 3, 7, 7) and blocks == 16
        return ok, f"fc.weight {fc}, conv1 {conv1}, {blocks} bottlenecks (reference: ({classes}, 2048), (64, 3, 7, 7), 16)"
    if kind == "emotion_head":
        fc = _shape(state, "fc.weight")
        return fc == (8, 768), f"fc.weight {fc} (reference: (8, 768) on CLIP ViT-L/14)"
    raise ValueError(f"unknown weights kind {kind!r}")


def check_weights(kind: str, path, state: Mapping) -> dict:
    """The provenance record of one weights file (see the module docstring)."""
    prefix, reference = REFERENCE[kind]
    p = Path(str(path)).expanduser()
    digest = sha256(p) if p.is_file() else None
    ok, compared = signature(kind, state)
    out = {"kind": kind, "path": str(p.resolve()) if p.exists() else str(path), "sha256": digest,
           "reference": reference}
    if prefix and digest and digest.startswith(prefix):
        return {**out, "status": "verified", "why": f"sha256 {digest[:8]}… is the published file's"}
    if prefix and digest and p.suffix in (".pth", ".pt", ".tar"):
        return {**out, "status": "unverified", "why": f"sha256 {digest[:8]}… is not the published {prefix}…"}
    if ok:
        return {**out, "status": "signature", "why": f"no checksum applies; architecture matches: {compared}"}
    return {**out, "status": "unverified", "why": f"not the reference network: {compared}"}


def check_clip(name_or_path: str, model) -> dict:
    """CLIP: ViT-L/14 (EmoGen's) by its configuration; a Hub id is recorded as given."""
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None)
    found = (getattr(config, "projection_dim", None), getattr(vision, "hidden_size", None),
             getattr(vision, "patch_size", None), getattr(vision, "num_hidden_layers", None))
    ok = found == (768, 1024, 14, 24)
    out = {"kind": "clip", "path": str(name_or_path), "sha256": None,
           "reference": "openai/clip-vit-large-patch14 (CLIP ViT-L/14)"}
    compared = f"(projection, width, patch, layers) {found} (ViT-L/14: (768, 1024, 14, 24))"
    if ok:
        return {**out, "status": "signature", "why": f"architecture matches: {compared}"}
    return {**out, "status": "unverified", "why": f"not CLIP ViT-L/14: {compared}"}
