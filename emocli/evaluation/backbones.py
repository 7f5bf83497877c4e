"""The networks of `emo eval generation`, each loaded from one recipe key, and the per-image extractors.

Every backbone is a Hub id or a local path. A configured path that is missing, or a Hub id that is not
in the local cache while offline, is one line naming the weights and the recipe key (exit 2).

Extractors map a list of RGB PIL images to one row per image; their `identity` keys the feature cache:

- ``clip``: raw CLIP ``get_image_features`` (Emo-A, Sem-D, CLIP-I, CLIP-T);
- ``inception``: 2048-d FID pool features after the recipe's preprocessing (FID);
- ``sem_c``: [top scene probability, top object probability] after Resize 256 / CenterCrop 224 (Sem-C).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from emocli.errors import EmoError
from emocli.evaluation.cache import file_identity
from emocli.evaluation.provenance import check_weights

log = logging.getLogger("emocli")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmoError("models.device=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def require_path(path, recipe_key: str, what: str) -> Path:
    """A configured local weights path that must exist."""
    if path is None or str(path) == "":
        raise EmoError(f"no {what} configured: set the recipe key {recipe_key} to its local path")
    p = Path(str(path)).expanduser()
    if not p.exists():
        from emocli.preflight import how_to_make

        raise EmoError(f"{what} {str(p)!r} does not exist (recipe key {recipe_key}){how_to_make(p)}")
    return p


def _rekey(error: EmoError, old: str, new: str) -> EmoError:
    return EmoError(error.message.replace(old, new), error.exit_code)


# --------------------------------------------------------------------------------------------- loaders


def load_clip(name_or_path: str, recipe_key: str, device: torch.device):
    """(CLIPModel in eval mode on `device`, CLIPProcessor) from a Hub id or a local folder."""
    from transformers import CLIPModel, CLIPProcessor
    from transformers.utils import logging as hf_logging

    from emocli.hub import load_pretrained

    hf_logging.disable_progress_bar()
    model = load_pretrained(CLIPModel.from_pretrained, name_or_path, recipe_key, "CLIP model")
    processor = load_pretrained(CLIPProcessor.from_pretrained, name_or_path, recipe_key, "CLIP processor")
    return model.eval().requires_grad_(False).to(device), processor


def load_inception(path, recipe_key: str, mode: str, device: torch.device):
    """`InceptionFeatures` (FID Inception-v3 + preprocessing `mode`) from a published weights file; its
    `.provenance` says whether it is the 2015-12-05 FID network (`emocli.evaluation.provenance`)."""
    from emocli.metrics import fid
    from emocli.metrics.common import load_state_dict_file

    p = require_path(path, recipe_key, f"FID Inception-v3 weights ({fid.WEIGHT_FILES[0]})")
    state = load_state_dict_file(p, recipe_key, f"FID Inception-v3 weights ({fid.WEIGHT_FILES[0]})")
    net = fid.FIDInceptionV3()
    try:
        fid.load_inception_weights(net, state, source=repr(str(p)))
    except EmoError as e:
        raise _rekey(e, fid.RECIPE_KEY, recipe_key) from None
    features = fid.InceptionFeatures(net, mode=mode).to(device)
    features.provenance = check_weights("inception", p, state)
    _warn_unverified(features.provenance, recipe_key)
    return features


def load_lpips(backbone_path, heads_path, backbone_key: str, heads_key: str, device: torch.device):
    """LPIPS v0.1: AlexNet trunk (torchvision layout; narrow test widths are read from the file) + heads."""
    from emocli.metrics import lpips
    from emocli.metrics.common import load_state_dict_file

    what = "LPIPS AlexNet backbone (alexnet-owt-7be5be79.pth)"
    bp = require_path(backbone_path, backbone_key, what)
    hp = require_path(heads_path, heads_key, "LPIPS linear heads (lpips weights/v0.1/alex.pth)")
    state = load_state_dict_file(bp, backbone_key, what)
    convs = [f"features.{i}.weight" for i in (0, 3, 6, 8, 10)]
    if not all(k in state for k in convs):
        raise EmoError(f"{str(bp)!r} is not a torchvision AlexNet state dict (no {convs[0]}; recipe key {backbone_key})")
    widths = tuple(int(state[k].shape[0]) for k in convs)
    try:
        net = lpips.AlexNetFeatures(widths).load(state, source=repr(str(bp)))
        heads = load_state_dict_file(hp, heads_key, "LPIPS linear heads (lpips weights/v0.1/alex.pth)")
        model = lpips.LPIPS(net).load_heads(heads)
    except EmoError as e:
        raise _rekey(_rekey(e, lpips.BACKBONE_KEY, backbone_key), lpips.HEADS_KEY, heads_key) from None
    model.provenance = {"backbone": check_weights("lpips_backbone", bp, state),
                        "heads": check_weights("lpips_heads", hp, heads)}
    _warn_unverified(model.provenance["backbone"], backbone_key)
    _warn_unverified(model.provenance["heads"], heads_key)
    return model.to(device)


def load_resnet(path, recipe_key: str, what: str, device: torch.device, kind: str = "object_classifier"):
    """A ResNet-50 classifier; `.provenance` checks it against the reference network of `kind`
    ("scene_classifier": Places365, "object_classifier": torchvision ImageNet)."""
    from emocli.metrics.semantic import ResNet50

    p = require_path(path, recipe_key, what)
    model = ResNet50.from_file(p, recipe_key=recipe_key)
    model.provenance = check_weights(kind, p, model.state_dict())
    _warn_unverified(model.provenance, recipe_key)
    return model.to(device).eval()


def _warn_unverified(provenance: dict, recipe_key: str) -> None:
    if provenance["status"] == "unverified":
        log.warning("%s: %s is not the reference %s (%s); metrics using it are flagged", recipe_key,
                    provenance["path"], provenance["reference"], provenance["why"])


# --------------------------------------------------------------------------------------------- extractors


def clip_identity(source: str) -> dict:
    """The feature-cache identity of raw CLIP image embeddings (shared by eval and the Emo-A classifier)."""
    return {"backbone": "clip", "weights": file_identity(source),
            "features": "get_image_features (raw), CLIPProcessor preprocessing"}


class ClipImageExtractor:
    """Raw CLIP image embeddings (what Emo-A's head and Sem-D read; CLIP-I/T normalise them)."""

    name = "clip"

    def __init__(self, model, processor, source: str, batch_size: int = 32):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.dim = int(getattr(model.config, "projection_dim", 0) or 0)
        self.identity = clip_identity(source)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        from emocli.metrics.clip_scores import clip_image_features

        return clip_image_features(self.model, self.processor, images, self.batch_size).features

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        from emocli.metrics.clip_scores import clip_text_features

        return clip_text_features(self.model, self.processor, texts, max(self.batch_size, 64)).features


class InceptionExtractor:
    """2048-d FID features; every image is preprocessed on its own (sizes may differ), the net runs batched."""

    name = "inception"
    dim = 2048

    def __init__(self, features, source, mode: str):
        self.features, self.mode = features, mode
        self.identity = {"backbone": "fid-inception-v3", "weights": file_identity(source), "preprocess": mode}

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        from emocli.metrics.common import to_uint8_chw
        from emocli.metrics.fid import preprocess_inception

        x = torch.cat([preprocess_inception(to_uint8_chw(im)[None], mode=self.mode) for im in images])
        device = next(self.features.net.parameters()).device
        return self.features.net(x.to(device)).float().cpu()


class SemCExtractor:
    """Per image: [top softmax probability of the scene classifier, top of the object classifier]."""

    name = "sem_c"
    dim = 2

    def __init__(self, scene, objects, scene_source, object_source):
        self.scene, self.objects = scene, objects
        self.identity = {"backbone": "sem-c", "scene": file_identity(scene_source),
                         "object": file_identity(object_source), "preprocess": "resize 256, center crop 224, imagenet"}

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        from emocli.metrics.semantic import imagenet_preprocess

        x = imagenet_preprocess(images)
        out = []
        for clf in (self.scene, self.objects):
            logits = clf(x.to(next(clf.parameters()).device))
            out.append(torch.softmax(logits.double(), 1).amax(1).float().cpu())
        return torch.stack(out, dim=1)
