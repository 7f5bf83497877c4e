"""Golden-value inputs: network weights and images from a seeded numpy PCG64 generator (numpy only).

The same numbers come out under any torch version, so expected metric values computed once with the
independent libraries (torch-fidelity, lpips, torchvision; `tools/golden_metrics.py`) can be compared in
CI with `emocli.metrics` (tests/test_metrics_golden.py).

Only ``Generator.random`` (uniform doubles from PCG64, stable across numpy releases) is used. Every tensor
is drawn from its own stream, seeded by (seed, crc32(key)), so a network that lacks some keys (our FID
trunk has no ``fc``) still gets the same values for the keys it has. Initialisation by key and shape:

- convolution / linear weights (2-D or more): uniform in ±sqrt(6 / fan_in) (He-uniform, keeps activations
  alive through ~100 ReLU layers);
- 1-D ``weight`` (BatchNorm scale): U(0.8, 1.2), except a ResNet bottleneck's last one (``bn3.weight``):
  U(0.05, 0.15), so that the logits stay O(1) and the softmax probabilities Sem-C reads are not all 1; ``running_var``: U(0.6, 1.4); ``running_mean`` and
  every 1-D ``bias``: U(-0.1, 0.1);
- LPIPS heads (``lin*.model.1.weight``): U(0, 2 / channels), non-negative as in the released heads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

SEED = 20151205


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(name.encode("utf-8"))]))


def uniform(seed: int, name: str, shape, low: float, high: float) -> np.ndarray:
    u = stream(seed, name).random(int(np.prod(shape)) if len(shape) else 1)
    return (low + (high - low) * u).reshape(shape).astype(np.float32)


def tensor_for(key: str, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """The value of one state-dict entry (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if key.startswith("lin") and key.endswith("model.1.weight"):
        return uniform(seed, key, shape, 0.0, 2.0 / shape[1])
    if len(shape) >= 2:
        bound = float(np.sqrt(6.0 / int(np.prod(shape[1:]))))
        return uniform(seed, key, shape, -bound, bound)
    if key.endswith("running_var"):
        return uniform(seed, key, shape, 0.6, 1.4)
    if key.endswith("bn3.weight"):  # a ResNet bottleneck's last BatchNorm: small, so 16 residual sums stay O(1)
        return uniform(seed, key, shape, 0.05, 0.15)
    if key.endswith("weight"):
        return uniform(seed, key, shape, 0.8, 1.2)
    return uniform(seed, key, shape, -0.1, 0.1)  # biases, running_mean


def state_dict(keys_and_shapes: Iterable[tuple[str, tuple[int, ...]]], seed: int = SEED) -> dict[str, np.ndarray]:
    """{key: float32 array} for every (key, shape); ``num_batches_tracked`` entries are left out."""
    return {k: tensor_for(k, s, seed) for k, s in keys_and_shapes if not k.endswith("num_batches_tracked")}


def image(seed: int, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W, 3) test image: blocky low-frequency colour fields, a diagonal ramp and pixel noise."""
    rng = np.random.Generator(np.random.PCG64([int(seed), height, width]))
    grid = rng.random((5, 7, 3))
    rows = np.minimum((np.arange(height) * 5) // height, 4)
    cols = np.minimum((np.arange(width) * 7) // width, 6)
    field = grid[rows][:, cols]
    ramp = (np.arange(height)[:, None] / max(1, height - 1) + np.arange(width)[None, :] / max(1, width - 1)) / 2
    noise = rng.random((height, width, 3))
    x = 0.6 * field + 0.25 * ramp[..., None] + 0.15 * noise
    return np.clip(np.floor(x * 256.0), 0, 255).astype(np.uint8)


# The fixed inputs of every golden value (sizes differ on purpose: the resizes are part of each metric).
FID_IMAGES = [(1, 299, 299), (2, 64, 80), (3, 120, 96), (4, 333, 250), (5, 48, 48), (6, 200, 150),
              (7, 299, 299), (8, 90, 120), (9, 150, 150), (10, 256, 256), (11, 72, 60), (12, 180, 240)]
LPIPS_PAIRS = [((21, 64, 64), (22, 64, 64)), ((23, 64, 64), (24, 64, 64)), ((25, 96, 72), (26, 96, 72)),
               ((27, 64, 64), (27, 64, 64))]
SEM_C_IMAGES = [(31, 256, 256), (32, 300, 240), (33, 224, 320)]
PROJECTION_DIM = 8


def projection(dim: int, name: str, seed: int = SEED) -> np.ndarray:
    """(dim, PROJECTION_DIM) ±1-ish weights that summarise a feature vector in 8 numbers."""
    return uniform(seed, f"projection/{name}", (dim, PROJECTION_DIM), -1.0, 1.0).astype(np.float64)
