"""Sem-C (semantic clarity) and Sem-D (semantic diversity), EmoGen's two content metrics.

**Sem-C** (EmoGen ``metrics/Semantic_metrics.py:Semantic_clarity``):

- Preprocessing (`imagenet_preprocess`): RGB uint8 -> PIL bilinear resize of the shorter side to 256 (longer
  side ``int(256 * long / short)``) -> centre crop 224 (offsets rounded) -> [0, 1] -> ImageNet mean/std.
  This is what torchvision's ``Resize(256), CenterCrop(224), ToTensor(), Normalize(...)`` does on PIL images.
- Two classifiers, each any callable returning logits (a tensor, or an output with ``.logits``): a scene
  classifier (EmoGen: ResNet-50 trained on Places365, ``resnet50_places365.pth.tar`` from the Places2 site)
  and an object classifier (EmoGen: torchvision ResNet-50, ImageNet ``IMAGENET1K_V1`` weights
  ``resnet50-0676ba61.pth``). Both load into the plain-torch `ResNet50` here (torchvision key layout, the
  Places365 file's ``module.`` prefix and ``state_dict`` wrapper are stripped); recipe keys
  ``eval.sem_c.scene_weights`` and ``eval.sem_c.object_weights``.
- Per image: ``max(max softmax(scene logits), max softmax(object logits))``; Sem-C is the mean over all
  images (all emotions pooled; Table 1: 0.633 for EmoGen).

**Sem-D** (same file, ``Semantic_diversity``):

- Embeddings: raw (unnormalised) CLIP ViT-L/14 ``get_image_features``.
- Pairs: `pairs_per_emotion` random distinct pairs of distinct images *within each emotion*
  (`common.within_group_pairs`; the same pairs LPIPS diversity draws for the same seed and counts).
- Two named scores per pair, averaged per emotion and then over emotions (unweighted):
  ``sem_d_mse`` = mean over the D dimensions of ``(e_i - e_j)^2`` (``F.mse_loss``; by magnitude the variant
  behind Table 1's 0.0335), and ``sem_d_cosine`` = ``1 - cos(e_i, e_j)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emocli.errors import EmoError
from emocli.metrics.common import load_state_dict_file, to_uint8_chw, within_group_pairs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCENE_KEY = "eval.sem_c.scene_weights"
OBJECT_KEY = "eval.sem_c.object_weights"


# --------------------------------------------------------------------------------------------- Sem-C


def imagenet_preprocess(images, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """Images (PIL, arrays, uint8 or [0, 1] float tensors, paths) -> float32 (N, 3, crop, crop), normalised."""
    from PIL import Image

    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    out = []
    for image in images:
        if not isinstance(image, Image.Image):
            image = Image.fromarray(to_uint8_chw(image).permute(1, 2, 0).numpy())
        image = image.convert("RGB")
        w, h = image.size
        if w <= h:
            new_w, new_h = resize, int(resize * h / w)
        else:
            new_w, new_h = int(resize * w / h), resize
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=Image.Resampling.BILINEAR)
        if new_w < crop or new_h < crop:
            raise EmoError(f"cannot centre-crop {crop} out of a {new_w}x{new_h} image; lower `crop`")
        top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
        image = image.crop((left, top, left + crop, top + crop))
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0)
    if not out:
        raise EmoError("no images given")
    x = torch.stack(out)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _logits(classifier: Callable, x: torch.Tensor) -> torch.Tensor:
    if isinstance(classifier, nn.Module):
        try:
            x = x.to(next(classifier.parameters()).device)
        except StopIteration:
            pass
    out = classifier(x)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise EmoError(f"a Sem-C classifier must return (N, classes) logits, got {type(out).__name__}")
    return logits.detach().float().cpu()


@torch.no_grad()
def semantic_clarity(images, scene_classifier: Callable, object_classifier: Callable, batch_size: int = 32,
                     resize: int = 256, crop: int = 224, preprocessed: bool = False) -> dict:
    """Sem-C: mean over images of max(top scene probability, top object probability).

    `images`: anything `imagenet_preprocess` takes, or an already normalised (N, 3, H, W) float tensor with
    ``preprocessed=True``. Returns ``sem_c``, ``per_image``, ``scene_top``/``object_top`` (per-image top
    probabilities), ``scene_wins`` (fraction of images where the scene classifier gave the max) and ``n``.
    """
    for name, clf in (("scene", scene_classifier), ("object", object_classifier)):
        if isinstance(clf, nn.Module):
            clf.eval()
        elif not callable(clf):
            raise EmoError(f"the {name} classifier must be callable")
    scene_top, object_top = [], []
    n = len(images)
    for start in range(0, n, max(1, int(batch_size))):
        chunk = images[start:start + batch_size]
        x = chunk.float() if preprocessed else imagenet_preprocess(chunk, resize, crop)
        scene_top.append(torch.softmax(_logits(scene_classifier, x).double(), 1).amax(1))
        object_top.append(torch.softmax(_logits(object_classifier, x).double(), 1).amax(1))
    if not scene_top:
        raise EmoError("Sem-C needs at least one image")
    scene, obj = torch.cat(scene_top), torch.cat(object_top)
    per_image = torch.maximum(scene, obj)
    return {
        "sem_c": float(per_image.mean()),
        "per_image": per_image.tolist(),
        "scene_top": scene.tolist(),
        "object_top": obj.tolist(),
        "scene_wins": float((scene >= obj).double().mean()),
        "n": int(per_image.numel()),
    }


# --------------------------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv); keys conv1..3, bn1..3, downsample.{0,1}."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """Plain-torch ResNet-50 in torchvision's layout (loads ``resnet50-*.pth`` and Places365's
    ``resnet50_places365.pth.tar``). `width` (64 for the real network) shrinks it for tests."""

    def __init__(self, num_classes: int = 1000, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, count in enumerate(blocks):
            stage_width = width * 2 ** i
            layers = []
            for b in range(count):
                layers.append(Bottleneck(cin, stage_width, stride=2 if (b == 0 and i > 0) else 1))
                cin = stage_width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    @classmethod
    def from_file(cls, path, recipe_key: str = OBJECT_KEY) -> ResNet50:
        """A ResNet-50 classifier from a torchvision-layout state dict; the class count comes from ``fc``,
        the width and block counts from the stored tensors (the published files give the standard ResNet-50)."""
        state = load_state_dict_file(path, recipe_key, "ResNet-50 classifier weights")
        if "fc.weight" not in state:
            raise EmoError(f"{str(path)!r} is not a torchvision ResNet-50 state dict (no fc.weight; recipe key {recipe_key})")
        blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        if "conv1.weight" not in state or 0 in blocks:
            raise EmoError(f"{str(path)!r} is not a torchvision ResNet state dict (recipe key {recipe_key})")
        model = cls(num_classes=state["fc.weight"].shape[0], width=state["conv1.weight"].shape[0], blocks=blocks)
        own = model.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or wrong:
            raise EmoError(f"{str(path)!r} is not a torchvision ResNet-50 state dict (missing {missing[:3]}, "
                           f"wrong shapes {wrong[:3]}; recipe key {recipe_key})")
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        return model.eval()


# --------------------------------------------------------------------------------------------- Sem-D


def semantic_diversity(features_by_emotion: Mapping[str, torch.Tensor], pairs_per_emotion: int = 10,
                       seed: int = 0) -> dict:
    """Sem-D from raw CLIP image embeddings per emotion ((N, D) each). See the module docstring.

    Returns ``sem_d_mse`` and ``sem_d_cosine`` (unweighted means over emotions), ``per_emotion``
    ({emotion: {"mse", "cosine"}}), ``pairs`` (count per emotion) and ``skipped`` (emotions with < 2 images).
    """
    feats = {e: torch.as_tensor(f).detach().double().cpu() for e, f in features_by_emotion.items()}
    pairs = within_group_pairs({e: f.shape[0] for e, f in feats.items()}, pairs_per_emotion, seed)
    per_emotion, counts, skipped = {}, {}, []
    for emotion, emo_pairs in pairs.items():
        if not emo_pairs:
            skipped.append(emotion)
            continue
        f = feats[emotion]
        a = f[[i for i, _ in emo_pairs]]
        b = f[[j for _, j in emo_pairs]]
        mse = ((a - b) ** 2).mean(dim=1)
        cos = 1.0 - F.cosine_similarity(a, b, dim=1)
        per_emotion[emotion] = {"mse": float(mse.mean()), "cosine": float(cos.mean())}
        counts[emotion] = len(emo_pairs)
    if not per_emotion:
        raise EmoError("Sem-D needs at least one emotion with two or more images")
    return {
        "sem_d_mse": float(np.mean([v["mse"] for v in per_emotion.values()])),
        "sem_d_cosine": float(np.mean([v["cosine"] for v in per_emotion.values()])),
        "per_emotion": per_emotion,
        "pairs": counts,
        "skipped": skipped,
    }


def semantic_diversity_images(model, processor, images_by_emotion: Mapping[str, object], pairs_per_emotion: int = 10,
                              seed: int = 0, batch_size: int = 32) -> dict:
    """Sem-D straight from images: embeds only the images that appear in a pair, with raw CLIP features."""
    from emocli.metrics.clip_scores import clip_image_features

    sizes = {e: len(images) for e, images in images_by_emotion.items()}
    pairs = within_group_pairs(sizes, pairs_per_emotion, seed)
    features = {}
    for emotion, emo_pairs in pairs.items():
        images = images_by_emotion[emotion]
        if not emo_pairs:
            features[emotion] = torch.zeros(sizes[emotion], 1)
            continue
        used = sorted({i for pair in emo_pairs for i in pair})
        chosen = images[used] if isinstance(images, torch.Tensor) else [images[i] for i in used]
        emb = clip_image_features(model, processor, chosen, batch_size).features.double()
        full = torch.zeros(sizes[emotion], emb.shape[1], dtype=torch.float64)
        full[used] = emb
        features[emotion] = full
    return semantic_diversity(features, pairs_per_emotion, seed)
