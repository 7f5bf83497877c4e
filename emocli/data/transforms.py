"""A small image transform (PIL -> normalised float tensor CxHxW) without torchvision.

Resize the shorter side to `size` (aspect kept), center-crop to `crop` (default: `size`, square),
optionally flip horizontally at random (training only), scale to [0, 1] and normalise per channel.
The random flip uses Python's `random` module, which torch's DataLoader seeds in every worker.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageTransform:
    """Callable PIL image -> float32 tensor (3, crop, crop); see `image_transform`."""

    def __init__(self, size: int, crop: int | None = None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 train: bool = False, flip: bool = False, interpolation: str = "bicubic"):
        if int(size) <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)
        self.crop = int(crop) if crop is not None else self.size
        if not 0 < self.crop <= self.size:
            raise ValueError(f"crop must be in 1..size ({self.size}), got {crop}")
        if len(mean) != 3 or len(std) != 3 or any(float(s) == 0 for s in std):
            raise ValueError(f"mean and std need 3 values each, std non-zero; got {mean}, {std}")
        if interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLE)}, got {interpolation!r}")
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        self.train = bool(train)
        self.flip = bool(flip)
        self.interpolation = interpolation

    def __call__(self, img: Image.Image):
        import torch

        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        if min(w, h) != self.size:
            # shorter side -> size; the longer side scales alike (truncated, as torchvision does)
            if w <= h:
                new_w, new_h = self.size, max(self.size, int(self.size * h / w))
            else:
                new_w, new_h = max(self.size, int(self.size * w / h)), self.size
            img = img.resize((new_w, new_h), _RESAMPLE[self.interpolation])
            w, h = new_w, new_h
        left = int(round((w - self.crop) / 2.0))
        top = int(round((h - self.crop) / 2.0))
        if (w, h) != (self.crop, self.crop):
            img = img.crop((left, top, left + self.crop, top + self.crop))
        if self.train and self.flip and random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = (arr - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return (f"ImageTransform(size={self.size}, crop={self.crop}, mean={self.mean.ravel().tolist()}, "
                f"std={self.std.ravel().tolist()}, train={self.train}, flip={self.flip}, "
                f"interpolation={self.interpolation!r})")


def image_transform(size: int, crop: int | None = None, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    train: bool = False, flip: bool = False, interpolation: str = "bicubic") -> ImageTransform:
    """PIL image -> float32 tensor (3, crop, crop), normalised as (x / 255 - mean) / std.

    The shorter side is resized to `size`, then the center `crop` x `crop` square is kept (`crop`
    defaults to `size`). A random horizontal flip (p = 0.5) happens only when both `train` and `flip`
    are true, so a recipe's augmentation settings can be passed unchanged to the evaluation transform.
    """
    return ImageTransform(size, crop=crop, mean=mean, std=std, train=train, flip=flip,
                          interpolation=interpolation)
