"""Fréchet Inception Distance: feature statistics, the Fréchet distance, and the FID Inception-v3 in plain torch.

Convention (what `emo` computes and what EmoGen's Table 1 used):

- **Features**: the 2048-d ``pool3`` output (global average pool after ``Mixed_7c``) of the *FID variant* of
  Inception-v3, the network converted from TensorFlow's ``2015-12-05`` Inception graph (published as
  ``pt_inception-2015-12-05-6726825d.pth`` by pytorch-fid and as
  ``weights-inception-2015-12-05-6726825d.pth`` by torch-fidelity / torchmetrics). It differs from the
  torchvision ImageNet Inception-v3 in that

  * the average pools inside the A (``Mixed_5b..5d``), C (``Mixed_6b..6e``) and first E (``Mixed_7b``)
    blocks exclude the zero padding from the average (``count_include_pad=False``, TensorFlow's behaviour);
  * the pooling branch of the last E block (``Mixed_7c``) is a 3x3 *max* pool (stride 1, padding 1);
  * the classifier has 1008 outputs (unused here; its weights are accepted and ignored);
  * no input transform (``transform_input=False``): the network expects 299x299 RGB in TF's [-1, 1] scale.

- **Preprocessing** (`PREPROCESS_MODES`), always from uint8 pixels:

  * ``"tf"`` (default; TF-FID / torch-fidelity / torchmetrics ``antialias=False`` compatible): uint8 ->
    float 0..255 -> TensorFlow-1 ``resize_bilinear`` to 299x299 (``align_corners=False`` *without*
    half-pixel centres: source coordinate = ``dst * in/out``) -> ``(x - 128) / 128`` (range [-1, 0.992]).
    EmoGen used torchmetrics ``FrechetInceptionDistance(normalize=True)`` from before torchmetrics 1.8, i.e.
    this path, with ``(x * 255).byte()`` truncation of [0, 1] floats (``quantize="truncate"``).
  * ``"pytorch"`` (pytorch-fid compatible): ``x / 255`` -> ``F.interpolate(bilinear, align_corners=False)``
    (half-pixel centres) -> ``2x - 1``.
  * ``"clean"`` (clean-fid's resize): each channel resized separately as a 32-bit float PIL image with PIL
    bicubic (antialiased) filtering to 299x299, clipped to 0..255 -> ``(x - 128) / 128``. Note that clean-fid
    itself pairs this resize with its TorchScript port of the same TF graph; numbers in "clean" mode are
    comparable to clean-fid's, not to "tf" ones.

- **Statistics** (`FeatureStats`): float64 mean and *unbiased* (n - 1) covariance, accumulated batch by batch
  with Chan's pairwise update (numerically safer than sums of outer products, same result). Statistics of
  groups can be pooled exactly: EmoGen's "aggregated" FID pools the per-emotion feature sums and covariance
  sums, which equals the statistics of all features concatenated (`FeatureStats.pool`).

- **Distance** (`frechet_distance`): ``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))``. The trace of the
  matrix square root is computed by default with the symmetric form ``Tr((S1^(1/2) S2 S1^(1/2))^(1/2))``
  using two symmetric eigendecompositions (eigenvalues clipped at 0): real-valued, no ``sqrtm`` iterations,
  and exact for PSD inputs. ``method="eigvals"`` (torchmetrics / torch-fidelity: sqrt of the eigenvalues of
  ``S1 S2``) and ``method="sqrtm"`` (pytorch-fid / clean-fid: ``scipy.linalg.sqrtm``, retried with ``eps * I``
  added to both covariances when the result is not finite, imaginary round-off discarded) are available.

Weights are never downloaded: point the recipe key ``eval.fid.inception_weights`` at a local copy of either
published file (``.pth`` read with `emocli.safeload.load_weights_only`, or a ``.safetensors`` conversion).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emocli.errors import EmoError
from emocli.metrics.common import load_state_dict_file, stack_images

RECIPE_KEY = "eval.fid.inception_weights"
WEIGHT_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
PREPROCESS_MODES = ("tf", "pytorch", "clean")
INCEPTION_SIZE = 299
STATS_FORMAT = "emocli.FeatureStats/1"


# --------------------------------------------------------------------------------------------- statistics


class FeatureStats:
    """Running float64 statistics of feature vectors: count `n`, `mean` (D,), unbiased covariance `cov` (D, D).

    Build with `FeatureStats(dim)` then `update(batch)` repeatedly, or `FeatureStats.from_features(x)`.
    `merge`/`pool` combine groups exactly (the statistics of the concatenated features). `save`/`load` use
    ``.npz`` files (keys ``n``, ``mean``, ``cov``, ``format``) read with ``allow_pickle=False``; files with
    pytorch-fid / clean-fid keys ``mu`` and ``sigma`` load too (their `n` is unknown, so they cannot be pooled).
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.n: int | None = 0
        self.mean = np.zeros(self.dim, dtype=np.float64)
        self._m2 = np.zeros((self.dim, self.dim), dtype=np.float64)  # sum of outer products of deviations
        self._cov_given: np.ndarray | None = None  # only for statistics loaded without a sample count

    # -- building
    @classmethod
    def from_features(cls, features) -> FeatureStats:
        x = _as_2d_float64(features)
        stats = cls(x.shape[1])
        stats.update(x)
        return stats

    @classmethod
    def from_mean_cov(cls, mean, cov, n: int | None) -> FeatureStats:
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (mean.size, mean.size):
            raise EmoError(f"covariance shape {cov.shape} does not match mean of size {mean.size}")
        stats = cls(mean.size)
        stats.n = None if n is None else int(n)
        stats.mean = mean.copy()
        stats._m2 = cov * (max(int(n), 1) - 1) if n is not None else cov.copy()
        stats._cov_given = None if n is not None else cov.copy()
        return stats

    def update(self, features) -> FeatureStats:
        """Add a batch (B, D) of features (any float dtype; accumulated in float64). Returns self."""
        x = _as_2d_float64(features)
        if x.shape[1] != self.dim:
            raise EmoError(f"feature dimension {x.shape[1]} does not match the statistics' {self.dim}")
        if x.shape[0] == 0:
            return self
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        batch = FeatureStats(self.dim)
        batch.n, batch.mean, batch._m2 = x.shape[0], batch_mean, centred.T @ centred
        merged = self.merge(batch)
        self.n, self.mean, self._m2 = merged.n, merged.mean, merged._m2
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both groups (Chan et al.'s pairwise combination)."""
        if self.n is None or other.n is None:
            raise EmoError("statistics loaded without a sample count (mu/sigma files) cannot be pooled")
        if other.dim != self.dim:
            raise EmoError(f"cannot pool statistics of dimension {self.dim} and {other.dim}")
        out = FeatureStats(self.dim)
        if other.n == 0:
            out.n, out.mean, out._m2 = self.n, self.mean.copy(), self._m2.copy()
            return out
        if self.n == 0:
            out.n, out.mean, out._m2 = other.n, other.mean.copy(), other._m2.copy()
            return out
        n = self.n + other.n
        delta = other.mean - self.mean
        out.n = n
        out.mean = self.mean + delta * (other.n / n)
        out._m2 = self._m2 + other._m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return out

    @classmethod
    def pool(cls, groups: Iterable[FeatureStats]) -> FeatureStats:
        """One statistics object for all groups together (EmoGen's "aggregated" statistics)."""
        groups = list(groups)
        if not groups:
            raise EmoError("no statistics to pool")
        out = cls(groups[0].dim)
        for g in groups:
            out = out.merge(g)
        return out

    # -- reading
    @property
    def cov(self) -> np.ndarray:
        if self._cov_given is not None:
            return self._cov_given
        if self.n is None or self.n < 2:
            raise EmoError(f"a covariance needs at least 2 feature vectors, these statistics have {self.n}")
        return self._m2 / (self.n - 1)

    def fid(self, other: FeatureStats, method: str = "symmetric") -> float:
        """Fréchet distance between these statistics and `other`."""
        return frechet_distance(self.mean, self.cov, other.mean, other.cov, method=method)

    # -- files
    def save(self, path) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, n=np.int64(-1 if self.n is None else self.n), mean=self.mean, cov=self.cov,
                 format=np.array(STATS_FORMAT))
        return path

    @classmethod
    def load(cls, path) -> FeatureStats:
        path = Path(path)
        if not path.is_file():
            raise EmoError(f"feature statistics file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                if {"mean", "cov"} <= keys:
                    n = int(data["n"]) if "n" in keys else -1
                    return cls.from_mean_cov(data["mean"], data["cov"], None if n < 0 else n)
                if {"mu", "sigma"} <= keys:
                    n = int(data["n"]) if "n" in keys else -1
                    return cls.from_mean_cov(data["mu"], data["sigma"], None if n < 0 else n)
        except ValueError as e:
            raise EmoError(f"cannot read feature statistics {str(path)!r}: {e}") from None
        raise EmoError(f"{str(path)!r} holds neither mean/cov nor mu/sigma arrays (found: {sorted(keys)})")

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, n={self.n})"


def _as_2d_float64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise EmoError(f"features must be (N, D), got shape {x.shape}")
    return x


# --------------------------------------------------------------------------------------------- distance


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "symmetric", eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``d^2 = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``.

    `method` picks how ``Tr((sigma1 sigma2)^(1/2))`` is computed:

    - ``"symmetric"`` (default): ``sum(sqrt(eigvalsh(A sigma2 A)))`` with ``A = sigma1^(1/2)`` from ``eigh``;
      eigenvalues are clipped at 0. Real, stable, exact for positive semi-definite inputs.
    - ``"eigvals"``: ``sum(sqrt(eigvals(sigma1 @ sigma2))).real`` (torchmetrics and torch-fidelity).
    - ``"sqrtm"``: ``trace(scipy.linalg.sqrtm(sigma1 @ sigma2))`` (pytorch-fid, clean-fid); when the product
      is singular and the result not finite, ``eps * I`` is added to both covariances; imaginary round-off
      is dropped.
    """
    mu1 = np.asarray(mu1, dtype=np.float64).reshape(-1)
    mu2 = np.asarray(mu2, dtype=np.float64).reshape(-1)
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise EmoError(f"mismatched Gaussian parameters: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    if method == "symmetric":
        root1 = _sqrt_psd(s1)
        middle = root1 @ s2 @ root1
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    elif method == "eigvals":
        tr_covmean = float(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum())
    elif method == "sqrtm":
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        tr_covmean = float(np.trace(np.real(covmean)))
    else:
        raise EmoError(f"unknown Fréchet distance method {method!r}; valid: symmetric, eigvals, sqrtm")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def aggregated_fid(real: Mapping[str, FeatureStats], fake: Mapping[str, FeatureStats],
                   method: str = "symmetric") -> dict:
    """EmoGen's FID report: one FID per emotion, plus the "aggregated" FID between the real and the generated
    statistics pooled over all emotions (`FeatureStats.pool`), plus the mean of the per-emotion FIDs.

    Only emotions present on both sides are used. The aggregated number is the one to compare with Table 1.
    """
    emotions = [e for e in fake if e in real]
    if not emotions:
        raise EmoError(f"no emotion has both real and generated statistics (real: {sorted(real)}, "
                       f"generated: {sorted(fake)})")
    per = {e: fake[e].fid(real[e], method=method) for e in emotions}
    pooled_real = FeatureStats.pool(real[e] for e in emotions)
    pooled_fake = FeatureStats.pool(fake[e] for e in emotions)
    return {
        "aggregated": pooled_fake.fid(pooled_real, method=method),
        "per_emotion": per,
        "mean_per_emotion": float(np.mean(list(per.values()))),
        "n_real": {e: real[e].n for e in emotions},
        "n_generated": {e: fake[e].n for e in emotions},
    }


# --------------------------------------------------------------------------------------------- preprocessing


def _tf1_axis(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(src).astype(np.int64)
    lower = np.minimum(lower, in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    lerp = (src - np.floor(src)).astype(np.float32)
    return (torch.from_numpy(lower).to(device), torch.from_numpy(upper).to(device),
            torch.from_numpy(lerp).to(device))


def resize_bilinear_tf1(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """TensorFlow-1 ``tf.image.resize_bilinear(align_corners=False)`` (legacy, no half-pixel centres) of a
    float (N, C, H, W) tensor: source coordinate ``dst * in/out``, neighbours ``floor`` and ``min(floor+1, in-1)``,
    interpolated along the width first, then the height, as TF does."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    n, c, h, w = x.shape
    if (h, w) == (out_h, out_w):
        return x
    y0, y1, wy = _tf1_axis(h, out_h, x.device)
    x0, x1, wx = _tf1_axis(w, out_w, x.device)
    wx, wy = wx.to(x.dtype), wy.to(x.dtype)
    top_rows, bottom_rows = x[:, :, y0, :], x[:, :, y1, :]
    top = top_rows[..., x0] + (top_rows[..., x1] - top_rows[..., x0]) * wx
    bottom = bottom_rows[..., x0] + (bottom_rows[..., x1] - bottom_rows[..., x0]) * wx
    return top + (bottom - top) * wy[:, None]


def resize_pil_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """clean-fid style resize: every channel as a float32 PIL image ('F' mode), bicubic, clipped to 0..255."""
    from PIL import Image

    arr = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((arr.shape[0], arr.shape[1], size, size), dtype=np.float32)
    for i in range(arr.shape[0]):
        for ch in range(arr.shape[1]):
            im = Image.fromarray(np.ascontiguousarray(arr[i, ch]))
            out[i, ch] = np.asarray(im.resize((size, size), resample=Image.Resampling.BICUBIC), dtype=np.float32)
    return torch.from_numpy(np.clip(out, 0, 255)).to(x.device)


def preprocess_inception(images, mode: str = "tf", quantize: str = "round") -> torch.Tensor:
    """Images (uint8 0..255, float [0, 1], PIL, arrays) -> float32 (N, 3, 299, 299) network input.

    Float inputs are first quantised to uint8 (`quantize` "round" or "truncate"; see the module docstring).
    """
    if mode not in PREPROCESS_MODES:
        raise EmoError(f"unknown Inception preprocessing {mode!r}; valid: {', '.join(PREPROCESS_MODES)}")
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    x = stack_images(images, quantize=quantize).float()
    if mode == "tf":
        return (resize_bilinear_tf1(x, INCEPTION_SIZE) - 128.0) / 128.0
    if mode == "pytorch":
        x = F.interpolate(x / 255.0, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0
    return (resize_pil_bicubic(x, INCEPTION_SIZE) - 128.0) / 128.0


# --------------------------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU. State-dict keys ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool(no pad count)->1x1; 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_tf(x)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2; 480 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (width `c7`); 768 channels out."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2; 512 + cin channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3/3x1 outputs; 2048 channels out. `pool` is "avg" (``Mixed_7b``, padding
    excluded from the average) or "max" (``Mixed_7c`` of the FID network)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_tf(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 trunk up to ``pool3``: (N, 3, 299, 299) in TF's [-1, 1] scale -> (N, 2048).

    Module names follow torchvision's Inception3 (``Conv2d_1a_3x3`` ... ``Mixed_7c``), which is the layout of
    both published FID weight files. The 1008-way ``fc`` layer of those files is not part of this module.
    """

    num_features = 2048

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception_weights(net: FIDInceptionV3, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load a published FID Inception state dict; the classifier (``fc.*``) and auxiliary head
    (``AuxLogits.*``) keys are ignored, every trunk tensor must be present with the right shape."""
    expected = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {', '.join(wrong[:3])}")
        raise EmoError(f"{source} is not an FID Inception-v3 state dict ({'; '.join(parts)}); expected "
                       f"{' or '.join(WEIGHT_FILES)} (recipe key {RECIPE_KEY})")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


class InceptionFeatures(nn.Module):
    """Images -> 2048-d FID features: preprocessing (`mode`, see the module docstring) + `FIDInceptionV3`.

    `forward(images)` accepts uint8 (N, 3, H, W) tensors (0..255) or float ones in [0, 1] (quantised with
    `quantize` first); it returns float32 (N, 2048). `num_features` lets it serve as a torchmetrics
    ``FrechetInceptionDistance(feature=...)`` extractor. Always in eval mode.
    """

    num_features = 2048

    def __init__(self, net: FIDInceptionV3 | None = None, mode: str = "tf", quantize: str = "round"):
        super().__init__()
        if mode not in PREPROCESS_MODES:
            raise EmoError(f"unknown Inception preprocessing {mode!r}; valid: {', '.join(PREPROCESS_MODES)}")
        self.net = net if net is not None else FIDInceptionV3()
        self.mode = mode
        self.quantize = quantize
        self.eval()

    def train(self, mode: bool = True):  # a metric network never trains
        return super().train(False)

    @classmethod
    def from_file(cls, path, mode: str = "tf", quantize: str = "round") -> InceptionFeatures:
        """Load ``pt_inception-2015-12-05-*.pth`` / ``weights-inception-2015-12-05-*.pth`` (or a safetensors copy).

        A missing file raises EmoError naming the file and the recipe key ``eval.fid.inception_weights``.
        """
        state = load_state_dict_file(path, RECIPE_KEY, f"FID Inception-v3 weights ({WEIGHT_FILES[0]})")
        net = FIDInceptionV3()
        load_inception_weights(net, state, source=f"{str(path)!r}")
        return cls(net, mode=mode, quantize=quantize)

    @torch.no_grad()
    def forward(self, images) -> torch.Tensor:
        device = next(self.net.parameters()).device
        x = preprocess_inception(images, mode=self.mode, quantize=self.quantize).to(device)
        return self.net(x).float()

    @torch.no_grad()
    def features(self, images, batch_size: int = 32) -> torch.Tensor:
        """Features of a long sequence (tensor or list) of images, `batch_size` at a time, on CPU."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images[None]
        out = [self(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)]
        if not out:
            return torch.zeros(0, self.num_features)
        return torch.cat(out)

    def stats(self, images, batch_size: int = 32) -> FeatureStats:
        """`FeatureStats` of the features of `images` (accumulated batch by batch)."""
        stats = FeatureStats(self.num_features)
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images[None]
        for i in range(0, len(images), batch_size):
            stats.update(self(images[i:i + batch_size]))
        return stats
