"""Seeded bootstrap confidence intervals for per-group (per-emotion) metrics, and the paired difference.

Every interval here is a percentile bootstrap, **stratified by group**: each resample draws, within every
group, as many units as the group has, with replacement, from that group's units (images, or image pairs for
LPIPS / Sem-D). The statistic is recomputed on each resample with the metric's own aggregation (per group,
and pooled as the metric defines it), and the interval is the (1 - level)/2 and (1 + level)/2 quantiles.
The generator is ``numpy.random.default_rng(seed)``; the same seed and inputs give the same interval.

- `bootstrap_means(values_by_group, ...)`: metrics that are means of per-unit values (Emo-A correctness,
  Sem-C, CLIP-T, CLIP-I, LPIPS and Sem-D pair distances). ``pooled="mean_of_groups"`` (the unweighted
  mean over groups) or ``"mean_of_units"`` (all units pooled).
- `bootstrap_fid(features_by_group, real_by_group, ...)`: FID with the reference statistics fixed and the
  generated images resampled; each resample uses `fid_to_features`, whose low-rank form costs one N x N
  eigendecomposition (N generated images) instead of two D x D ones.
- `paired_difference(a, b, ...)`: the interval of mean(b) - mean(a) over matched units (the same image
  names in two runs), resampling the matched units jointly; a difference is called real only when the
  interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _quantiles(samples: np.ndarray, level: float) -> list[float]:
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def _resample_indices(rng: np.random.Generator, sizes: Mapping[str, int], resamples: int) -> dict[str, np.ndarray]:
    return {g: rng.integers(0, n, size=(resamples, n)) for g, n in sizes.items() if n > 0}


def bootstrap_means(values_by_group: Mapping[str, object], resamples: int = 200, seed: int = 0, level: float = 0.95,
                    pooled: str = "mean_of_groups") -> dict:
    """{"pooled": [low, high], "per_group": {g: [low, high]}, "resamples", "level", "method"}."""
    values = {g: np.asarray(v, dtype=np.float64).ravel() for g, v in values_by_group.items()}
    values = {g: v for g, v in values.items() if v.size}
    rng = np.random.default_rng(seed)
    idx = _resample_indices(rng, {g: v.size for g, v in values.items()}, resamples)
    per_group_samples = {g: values[g][idx[g]].mean(axis=1) for g in values}
    if pooled == "mean_of_groups":
        pooled_samples = np.mean(np.stack(list(per_group_samples.values())), axis=0)
    elif pooled == "mean_of_units":
        sums = sum(values[g][idx[g]].sum(axis=1) for g in values)
        pooled_samples = sums / sum(v.size for v in values.values())
    else:
        raise ValueError(f"unknown pooling {pooled!r}; valid: mean_of_groups, mean_of_units")
    return {"pooled": _quantiles(pooled_samples, level),
            "per_group": {g: _quantiles(s, level) for g, s in per_group_samples.items()},
            "resamples": int(resamples), "level": level,
            "method": f"percentile bootstrap, units resampled within each group, pooled as {pooled}, seed {seed}"}


def fid_to_features(features, real) -> float:
    """FID between generated `features` (N, D) and reference statistics `real` (`FeatureStats`).

    When N - 1 < D: the nonzero eigenvalues of ``S_real S_gen`` are those of the N x N PSD matrix
    ``Xc S_real Xc^T / (N - 1)`` (``Xc``: centred generated features), so ``Tr((S_real S_gen)^(1/2))`` is
    exact from one N x N eigendecomposition. Otherwise `emocli.metrics.fid.frechet_distance` ("symmetric").
    """
    from emocli.metrics.fid import FeatureStats

    x = np.asarray(features, dtype=np.float64)
    n, d = x.shape
    if n - 1 < d:
        mean, cov = real.mean, real.cov  # `cov` is computed on each access: read it once
        mu = x.mean(axis=0)
        xc = x - mu
        small = xc @ cov @ xc.T / (n - 1)
        eig = np.linalg.eigvalsh((small + small.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
        diff = mean - mu
        return float(diff @ diff + np.trace(cov) + (xc * xc).sum() / (n - 1) - 2.0 * tr_covmean)
    return FeatureStats.from_features(x).fid(real, method="symmetric")


class _Fixed:
    """Reference statistics with the mean and covariance computed once (bootstrap reuses them)."""

    def __init__(self, stats):
        self.mean, self.cov, self.n = stats.mean, stats.cov, stats.n
        self.stats = stats


def _fid(x: np.ndarray, fixed: _Fixed) -> float:
    return fid_to_features(x, fixed if x.shape[0] - 1 < x.shape[1] else fixed.stats)


def bootstrap_fid(features_by_group: Mapping[str, object], real_by_group: Mapping[str, object],
                  resamples: int = 50, seed: int = 0, level: float = 0.95) -> dict:
    """Intervals of each group's FID and of the pooled (aggregated) FID, generated images resampled within
    each group, the reference statistics fixed (their sampling error is not included)."""
    from emocli.metrics.fid import FeatureStats

    feats = {g: np.asarray(f, dtype=np.float64) for g, f in features_by_group.items()}
    rng = np.random.default_rng(seed)
    idx = _resample_indices(rng, {g: f.shape[0] for g, f in feats.items()}, resamples)
    pooled_stats = FeatureStats.pool(real_by_group[g] for g in feats)
    pooled_real = _Fixed(pooled_stats)
    fixed = {g: _Fixed(real_by_group[g]) for g in feats}
    per_group = {g: [] for g in feats if feats[g].shape[0] >= 2}
    pooled = []
    for b in range(resamples):
        parts = []
        for g, f in feats.items():
            sample = f[idx[g][b]]
            parts.append(sample)
            if g in per_group:
                per_group[g].append(_fid(sample, fixed[g]))
        pooled.append(_fid(np.concatenate(parts), pooled_real))
    return {"pooled": _quantiles(np.asarray(pooled), level),
            "per_group": {g: _quantiles(np.asarray(v), level) for g, v in per_group.items()},
            "resamples": int(resamples), "level": level,
            "method": f"percentile bootstrap of the generated images within each group (reference statistics "
                      f"fixed), low-rank FID per resample, seed {seed}"}


def paired_difference(a, b, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Interval of mean(b) - mean(a) over matched units (a[i] and b[i] belong to the same image)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired bootstrap needs two equally long, non-empty value lists")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    diffs = (b - a)[idx].mean(axis=1)
    low, high = _quantiles(diffs, level)
    return {"difference": float((b - a).mean()), "interval": [low, high], "real": bool(low > 0 or high < 0),
            "n": int(a.size), "resamples": int(resamples), "level": level}
