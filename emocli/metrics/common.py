"""Helpers shared by the metric modules: image conversion, weight-file loading, within-group pair sampling.

Image conventions used throughout `emocli.metrics`:

- a *uint8* tensor or array holds pixel values 0..255;
- a *float* tensor holds values in [0, 1] unless a function says otherwise (LPIPS works in [-1, 1]);
- tensors are channel-first (N, 3, H, W) or (3, H, W); numpy arrays and PIL images are (H, W, 3).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emocli.errors import EmoError


def to_uint8_chw(image, quantize: str = "round") -> torch.Tensor:
    """One image (PIL, HWC numpy, CHW/HWC tensor) as a uint8 (3, H, W) tensor.

    Float inputs are taken to be in [0, 1] and quantised with `quantize`: "round" (what saving a PNG does)
    or "truncate" (`(x * 255).byte()`, what torchmetrics' FID does with ``normalize=True``).
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            image = im.convert("RGB")
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image.copy())
        if image.ndim == 3 and image.shape[-1] in (1, 3) and image.shape[0] not in (1, 3):
            image = image.permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise EmoError(f"unsupported image type {type(image).__name__}; use PIL images, arrays or tensors")
    if image.ndim != 3:
        raise EmoError(f"expected one image with 3 dimensions, got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image.contiguous()
    return float01_to_uint8(image.float(), quantize)


def float01_to_uint8(x: torch.Tensor, quantize: str = "round") -> torch.Tensor:
    """[0, 1] floats -> uint8, by rounding (default) or truncation (torchmetrics `normalize=True`)."""
    scaled = x.clamp(0, 1) * 255
    if quantize == "round":
        return scaled.round().to(torch.uint8)
    if quantize == "truncate":
        return scaled.to(torch.uint8)
    raise EmoError(f"unknown quantize mode {quantize!r}; valid: round, truncate")


def stack_images(images, quantize: str = "round") -> torch.Tensor:
    """A batch (tensor N,3,H,W or a sequence of images) as a uint8 (N, 3, H, W) tensor."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.dtype == torch.uint8:
            return images
        return float01_to_uint8(images.float(), quantize)
    items = [to_uint8_chw(im, quantize) for im in images]
    if not items:
        raise EmoError("no images given")
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise EmoError(f"images of different sizes in one batch: {sorted(shapes)}; resize them first")
    return torch.stack(items)


def to_float01(images) -> torch.Tensor:
    """A batch as float32 (N, 3, H, W) in [0, 1]; float tensors are passed through unchanged."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.dtype != torch.uint8:
        return images.float()
    return stack_images(images).float() / 255.0


def batched(items: Sequence, size: int) -> Iterable:
    size = max(1, int(size))
    for start in range(0, len(items), size):
        yield items[start:start + size]


def load_state_dict_file(path, recipe_key: str, what: str) -> dict:
    """A state dict from `.pth/.pt/.bin` (`emocli.safeload.load_weights_only`, on CPU) or `.safetensors`.

    A missing file raises EmoError naming the file and the recipe key that points at it. Nested
    checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a DataParallel
    ``module.`` prefix is stripped.
    """
    if path is None or str(path) == "":
        raise EmoError(f"no {what} file given: set the recipe key {recipe_key} to its local path")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        from emocli.preflight import how_to_make

        raise EmoError(f"{what} file {str(path)!r} does not exist: set the recipe key {recipe_key} to its local path"
                       f"{how_to_make(path)}")
    if path.suffix != ".safetensors":
        from emocli.safeload import load_weights_only

        state = load_weights_only(path, what=f"{what} file (recipe key {recipe_key})")
        return unwrap_state_dict(state, what=f"{what} file {str(path)!r}")
    try:
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    except Exception as e:  # any unreadable file is a user error here
        raise EmoError(f"cannot read {what} file {str(path)!r} (recipe key {recipe_key}): "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return unwrap_state_dict(state, what=f"{what} file {str(path)!r}")


def unwrap_state_dict(state, what: str = "state dict") -> dict:
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EmoError(f"{what} does not hold a state dict of tensors")
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def sample_pairs(n: int, k: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`k` distinct unordered pairs (i < j) of distinct indices out of range(n), uniformly at random.

    When `k` is at least the number of possible pairs n(n-1)/2, every pair is returned (in a random order).
    Fewer than 2 items give no pairs.
    """
    total = n * (n - 1) // 2
    if n < 2 or k <= 0:
        return []
    if k >= total:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        order = rng.permutation(len(pairs))
        return [pairs[o] for o in order]
    if k > total // 4:
        picks = rng.choice(total, size=k, replace=False)
        # unrank pair numbers into (i, j), i < j, counting row by row over the upper triangle
        row_starts = np.concatenate([[0], np.cumsum(np.arange(n - 1, 0, -1))])
        rows = np.searchsorted(row_starts, picks, side="right") - 1
        cols = picks - row_starts[rows] + rows + 1
        return [(int(i), int(j)) for i, j in zip(rows, cols)]
    seen: set[tuple[int, int]] = set()
    pairs = []
    while len(pairs) < k:
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        pair = (min(i, j), max(i, j))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def group_rng(seed: int, group: str) -> np.random.Generator:
    """The generator used for the group (emotion) named `group`: seeded by (seed, crc32(name)), so it does
    not depend on the order of the groups, and adding images to one emotion never changes another's pairs."""
    return np.random.default_rng([int(seed), zlib.crc32(str(group).encode("utf-8"))])


def within_group_pairs(sizes: Mapping[str, int], pairs_per_group: int, seed: int) -> dict[str, list]:
    """For each group (emotion), `pairs_per_group` random distinct pairs of its own items."""
    return {name: sample_pairs(int(n), int(pairs_per_group), group_rng(seed, name)) for name, n in sizes.items()}


def cumulative_pairs(sizes: Mapping[str, int], pairs_per_group: int, seed: int) -> dict[str, list]:
    """EmoGen's original pair sampling, kept for comparison with its Table 1: its script never reset the image
    list between emotions, so emotion k (in the order of `sizes`) drew its pairs from the images of emotions
    1..k together. Returns {group: [((group_a, index_a), (group_b, index_b)), ...]}; the first group's pairs
    equal its within-group pairs (same generator, same pool)."""
    out, pool = {}, []
    for name, n in sizes.items():
        pool += [(name, i) for i in range(int(n))]
        out[name] = [(pool[a], pool[b]) for a, b in sample_pairs(len(pool), int(pairs_per_group), group_rng(seed, name))]
    return out
