"""Seeded bootstrap intervals (emocli.metrics.bootstrap) and the paired test behind `--compare`."""

from __future__ import annotations

import numpy as np
import pytest


def test_bootstrap_means_is_seeded_stratified_and_covers_the_mean():
    from emocli.metrics.bootstrap import bootstrap_means

    rng = np.random.default_rng(1)
    values = {"a": rng.normal(0.3, 0.1, 40), "b": rng.normal(0.7, 0.1, 10), "c": np.full(5, 0.5)}
    ci = bootstrap_means(values, resamples=500, seed=3)
    assert ci == bootstrap_means(values, resamples=500, seed=3)  # seeded
    assert ci != bootstrap_means(values, resamples=500, seed=4)
    assert ci["per_group"]["c"] == [0.5, 0.5]  # a constant group cannot move
    for g, v in values.items():
        lo, hi = ci["per_group"][g]
        assert lo <= v.mean() <= hi
    # stratified: each resample keeps the group sizes, so the pooled mean of groups stays near the truth and
    # its interval is narrower than the widest group's
    lo, hi = ci["pooled"]
    assert lo <= np.mean([v.mean() for v in values.values()]) <= hi
    assert hi - lo < max(high - low for low, high in ci["per_group"].values())
    # the standard error of a mean of 40 N(., 0.1) draws is 0.0158: a 95% interval spans about 4 of them
    width = ci["per_group"]["a"][1] - ci["per_group"]["a"][0]
    assert 0.04 < width < 0.085
    units = bootstrap_means(values, resamples=500, seed=3, pooled="mean_of_units")
    all_mean = np.concatenate(list(values.values())).mean()
    assert units["pooled"][0] <= all_mean <= units["pooled"][1]


def test_lowrank_fid_equals_the_symmetric_form_and_its_bootstrap_brackets_it():
    from emocli.metrics.bootstrap import bootstrap_fid, fid_to_features
    from emocli.metrics.fid import FeatureStats

    rng = np.random.default_rng(0)
    real = {g: FeatureStats.from_features(rng.normal(size=(60, 16)) + k) for k, g in enumerate("ab")}
    fake = {g: rng.normal(size=(9, 16)) + k + 0.3 for k, g in enumerate("ab")}
    for g in "ab":  # N - 1 < D: the low-rank path
        exact = FeatureStats.from_features(fake[g]).fid(real[g], method="sqrtm")
        assert fid_to_features(fake[g], real[g]) == pytest.approx(exact, rel=1e-8)
    ci = bootstrap_fid(fake, real, resamples=40, seed=0)
    assert set(ci["per_group"]) == {"a", "b"} and ci["resamples"] == 40
    assert ci == bootstrap_fid(fake, real, resamples=40, seed=0)
    lo, hi = ci["per_group"]["a"]
    assert 0 < lo < hi


def test_paired_difference_calls_only_intervals_that_exclude_zero():
    from emocli.metrics.bootstrap import paired_difference

    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    better = paired_difference(a, a + 0.5 + rng.normal(0, 0.1, 200))
    assert better["real"] and better["interval"][0] > 0.4 and better["difference"] == pytest.approx(0.5, abs=0.05)
    # the same images with small independent noise: the interval contains zero
    noise = paired_difference(a, a + rng.normal(0, 0.1, 200) - 0.0, seed=1)
    assert noise["interval"][0] < 0 < noise["interval"][1] and not noise["real"]
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])
