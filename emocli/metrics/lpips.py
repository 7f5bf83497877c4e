"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), v0.1,
AlexNet variant, in plain torch; and the LPIPS *diversity* score used by EmoGen.

Convention:

- **Input range [-1, 1]**, (N, 3, H, W), both images of a pair the same size; no resizing. Use
  `to_lpips_range` to convert [0, 1] floats or uint8. The EmoGen evaluation script fed ``ToTensor`` images in
  [0, 1] to ``lpips.LPIPS`` without ``normalize=True``; that under-uses the input range and gives different
  (lower) numbers. `emo` converts correctly; pass ``value_range="raw"`` to `lpips_diversity` to reproduce the
  original mistake on purpose.
- **Scaling layer**: ``(x - shift) / scale`` with shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450),
  which maps [-1, 1] inputs approximately onto ImageNet normalisation.
- **Backbone**: the five ReLU outputs (relu1..relu5, 64/192/384/256/256 channels) of the torchvision AlexNet
  ``features`` stack (conv11/4 - relu - maxpool - conv5 - relu - maxpool - conv3 - relu - conv3 - relu - conv3 -
  relu), laid out with torchvision's indices so ``alexnet-owt-7be5be79.pth`` (``features.0.weight`` ...) loads
  directly (`AlexNetFeatures.load`). `AlexNetFeatures(widths=...)` builds narrow random backbones for tests.
- **Per layer**: unit-normalise each feature vector over channels (``x / (||x||_2 + 1e-10)``), squared
  difference, learned non-negative 1x1 linear head (``lin{k}.model.1.weight`` of shape (1, C, 1, 1), the
  lpips package's ``weights/v0.1/alex.pth`` format; ``model.0`` is a dropout), spatial mean.
- **Distance**: sum over the 5 layers; one value per pair.

Without head weights the heads are uniform (1/C, an unlearned baseline) and `LPIPS.heads_loaded` is False.

Diversity (`lpips_diversity`): for every emotion, `pairs_per_emotion` random *distinct* pairs of distinct
images drawn **within that emotion only** (EmoGen's script leaked earlier emotions' images into later
emotions' pools; fixed here), mean distance per emotion, then the unweighted mean over emotions (EmoGen's
"overall" number, Table 1's LPIPS). EmoGen used 10 pairs per emotion; more pairs give a less noisy estimate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from emocli.errors import EmoError
from emocli.metrics.common import load_state_dict_file, stack_images, within_group_pairs

BACKBONE_KEY = "eval.lpips.backbone_weights"
HEADS_KEY = "eval.lpips.head_weights"
ALEXNET_WIDTHS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


def to_lpips_range(images, value_range: str = "auto") -> torch.Tensor:
    """Images -> float32 (N, 3, H, W) in [-1, 1].

    `value_range`: "0-1" (float [0, 1] -> 2x - 1), "uint8" (x / 127.5 - 1), "-1-1" (unchanged), "raw" (floats
    passed through untouched, whatever their range: reproduces EmoGen's [0, 1]-into-LPIPS mistake), or
    "auto": uint8 dtype or PIL/arrays -> "uint8", float tensors -> "0-1".
    """
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if (isinstance(images, (list, tuple)) and images
            and all(isinstance(im, torch.Tensor) and im.dtype.is_floating_point and im.ndim == 3 for im in images)):
        images = torch.stack([im.float() for im in images])  # float tensors keep full precision
    is_float = isinstance(images, torch.Tensor) and images.dtype.is_floating_point
    if value_range == "auto":
        value_range = "0-1" if is_float else "uint8"
    if value_range in ("-1-1", "raw"):
        if not is_float:
            raise EmoError(f"value_range={value_range!r} needs float tensors")
        return images.float()
    if value_range == "0-1":
        if not is_float:
            raise EmoError("value_range='0-1' needs float tensors in [0, 1]")
        return images.float() * 2.0 - 1.0
    if value_range == "uint8":
        return stack_images(images).float() / 127.5 - 1.0
    raise EmoError(f"unknown value_range {value_range!r}; valid: auto, 0-1, uint8, -1-1, raw")


class ScalingLayer(nn.Module):
    """``(x - shift) / scale`` with the LPIPS constants (buffers, not learned)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.shift) / self.scale


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet ``features`` (same indices: convs at 0, 3, 6, 8, 10) returning relu1..relu5."""

    TAPS = (1, 4, 7, 9, 11)

    def __init__(self, widths: tuple[int, ...] = ALEXNET_WIDTHS):
        super().__init__()
        if len(widths) != 5:
            raise EmoError(f"AlexNet needs 5 widths, got {widths}")
        w1, w2, w3, w4, w5 = (int(w) for w in widths)
        self.widths = (w1, w2, w3, w4, w5)
        self.features = nn.Sequential(
            nn.Conv2d(3, w1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(w1, w2, kernel_size=5, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(w2, w3, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(w3, w4, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(w4, w5, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                outs.append(x)
            if i == self.TAPS[-1]:
                break
        return outs

    def load(self, state: Mapping[str, torch.Tensor] | str, source: str = "state dict") -> AlexNetFeatures:
        """Load torchvision AlexNet weights (``alexnet-owt-7be5be79.pth``: ``features.{0,3,6,8,10}.*``;
        ``classifier.*`` is ignored). `state` may be a path (`emocli.safeload.load_weights_only`/safetensors)."""
        if not isinstance(state, Mapping):
            source = repr(str(state))
            state = load_state_dict_file(state, BACKBONE_KEY, "AlexNet backbone weights (alexnet-owt-7be5be79.pth)")
        own = self.state_dict()
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        missing = [k for k in own if k not in state]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or wrong:
            raise EmoError(f"{source} is not a torchvision AlexNet state dict "
                           f"(missing: {missing[:3]}, wrong shapes: {wrong[:3]}); recipe key {BACKBONE_KEY}")
        self.load_state_dict({k: state[k] for k in own})
        return self


class LinearHead(nn.Module):
    """``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))``: the lpips v0.1 head layout."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))
        nn.init.constant_(self.model[1].weight, 1.0 / channels)

    def forward(self, x):
        return self.model(x)


def _unit_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + _EPS)


class LPIPS(nn.Module):
    """LPIPS distance. ``LPIPS()(x, y)`` with x, y in [-1, 1], shape (N, 3, H, W) -> (N,) distances.

    Build the real metric with `LPIPS.from_files(alexnet_path, heads_path)`; `LPIPS(AlexNetFeatures(widths))`
    with random weights serves tests. Always in eval mode, no gradients to its parameters.
    """

    def __init__(self, backbone: AlexNetFeatures | None = None):
        super().__init__()
        self.scaling = ScalingLayer()
        self.net = backbone if backbone is not None else AlexNetFeatures()
        for k, width in enumerate(self.net.widths):
            setattr(self, f"lin{k}", LinearHead(width))
        self.heads_loaded = False
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # a metric network never trains
        return super().train(False)

    @property
    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{k}") for k in range(len(self.net.widths))]

    @classmethod
    def from_files(cls, backbone_path, heads_path) -> LPIPS:
        """AlexNet from torchvision's ``alexnet-owt-7be5be79.pth``, heads from lpips' ``weights/v0.1/alex.pth``."""
        model = cls(AlexNetFeatures().load(backbone_path))
        return model.load_heads(heads_path)

    def load_heads(self, state: Mapping[str, torch.Tensor] | str) -> LPIPS:
        """Load ``lin{k}.model.1.weight`` tensors (lpips ``alex.pth`` format; a path or a state dict)."""
        source = "head state dict"
        if not isinstance(state, Mapping):
            source = repr(str(state))
            state = load_state_dict_file(state, HEADS_KEY, "LPIPS linear heads (lpips weights/v0.1/alex.pth)")
        for k, head in enumerate(self.heads):
            key = f"lin{k}.model.1.weight"
            if key not in state:
                raise EmoError(f"{source} has no {key}: not an lpips v0.1 head file (recipe key {HEADS_KEY})")
            weight = state[key]
            if tuple(weight.shape) != tuple(head.model[1].weight.shape):
                raise EmoError(f"{source}: {key} has shape {tuple(weight.shape)}, the backbone needs "
                               f"{tuple(head.model[1].weight.shape)}")
            head.model[1].weight.data.copy_(weight)
        self.heads_loaded = True
        return self

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, 5): the spatially averaged, head-weighted distance of each layer."""
        if x.shape != y.shape:
            raise EmoError(f"LPIPS compares images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        device = next(self.parameters()).device
        fx = self.net(self.scaling(x.to(device).float()))
        fy = self.net(self.scaling(y.to(device).float()))
        per_layer = []
        for head, a, b in zip(self.heads, fx, fy):
            diff = (_unit_normalise(a) - _unit_normalise(b)) ** 2
            per_layer.append(head(diff).mean(dim=(1, 2, 3)))
        return torch.stack(per_layer, dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.layer_distances(x, y).sum(dim=1)

    @torch.no_grad()
    def distance(self, x, y, value_range: str = "auto") -> torch.Tensor:
        """Distances between images given in any supported form (converted with `to_lpips_range`)."""
        return self(to_lpips_range(x, value_range), to_lpips_range(y, value_range)).cpu()


def _select(images, idx: list[int]):
    if isinstance(images, torch.Tensor):
        return images[idx]
    return [images[i] for i in idx]


@torch.no_grad()
def lpips_diversity(images_by_emotion: Mapping[str, object], pairs_per_emotion: int = 10, seed: int = 0, *,
                    model: LPIPS, batch_size: int = 16, value_range: str = "auto") -> dict:
    """LPIPS diversity: mean LPIPS over random distinct within-emotion pairs, per emotion and overall.

    `images_by_emotion` maps an emotion to its images (an (N, 3, H, W) tensor, float [0, 1] or uint8, or a list
    of PIL images / arrays / paths). Pairs come from `emocli.metrics.common.within_group_pairs(seed)`: the
    same seed and counts give the same pairs as `semantic.semantic_diversity`, as in EmoGen, where one loop
    scored each pair with both metrics. Returns ``{"lpips": mean over emotions, "per_emotion": {...},
    "pooled": mean over all pairs, "pairs": {emotion: count}, "convention": ...}``; emotions with fewer than
    two images are skipped (listed under "skipped").
    """
    sizes = {emotion: len(images) for emotion, images in images_by_emotion.items()}
    pairs = within_group_pairs(sizes, pairs_per_emotion, seed)
    per_emotion, counts, all_values, skipped = {}, {}, [], []
    for emotion, emo_pairs in pairs.items():
        if not emo_pairs:
            skipped.append(emotion)
            continue
        images = images_by_emotion[emotion]
        values = []
        for start in range(0, len(emo_pairs), batch_size):
            chunk = emo_pairs[start:start + batch_size]
            a = to_lpips_range(_select(images, [i for i, _ in chunk]), value_range)
            b = to_lpips_range(_select(images, [j for _, j in chunk]), value_range)
            values.append(model(a, b).cpu())
        values = torch.cat(values).double().numpy()
        per_emotion[emotion] = float(values.mean())
        counts[emotion] = len(values)
        all_values.append(values)
    if not per_emotion:
        raise EmoError("LPIPS diversity needs at least one emotion with two or more images")
    return {
        "lpips": float(np.mean(list(per_emotion.values()))),
        "per_emotion": per_emotion,
        "pooled": float(np.concatenate(all_values).mean()),
        "pairs": counts,
        "skipped": skipped,
        "convention": f"LPIPS-alex v0.1, inputs {value_range}->[-1,1], {pairs_per_emotion} random distinct "
                      f"within-emotion pairs (seed {seed}), mean per emotion then unweighted mean",
    }
