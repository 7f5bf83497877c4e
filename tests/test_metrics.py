"""Metric library tests: closed forms, reference-package agreement where it installs without torchvision,
tiny random backbones built from configs, and EmoGen's real released emotion classifier."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from emocli.errors import EmoError

OFFICIAL_CLASSIFIER = ("data", "emogen-official", "weights", "Clip_emotion_classifier",
                       "time_2023-11-12_03-29-best.pth")


# ============================================================================================ FID


def _gaussian_features(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.exponential(size=(n, d)) * 0.3


@pytest.mark.parametrize("method", ["symmetric", "eigvals", "sqrtm"])
def test_frechet_distance_diagonal_closed_form(method):
    from emocli.metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    s1, s2 = rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 12)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", ["symmetric", "eigvals", "sqrtm"])
def test_frechet_distance_identical_sets_is_zero(method):
    from emocli.metrics.fid import FeatureStats, frechet_distance

    stats = FeatureStats.from_features(_gaussian_features(300, 16, seed=1))
    assert abs(frechet_distance(stats.mean, stats.cov, stats.mean, stats.cov, method=method)) < 1e-8
    # a singular (rank-deficient) covariance: fewer samples than dimensions
    low = FeatureStats.from_features(_gaussian_features(5, 16, seed=2))
    assert abs(frechet_distance(low.mean, low.cov, low.mean, low.cov, method=method)) < 1e-6


def test_frechet_methods_agree_on_full_covariances():
    from emocli.metrics.fid import FeatureStats

    a = FeatureStats.from_features(_gaussian_features(400, 24, seed=3))
    b = FeatureStats.from_features(_gaussian_features(350, 24, seed=4, shift=0.5))
    values = [a.fid(b, method=m) for m in ("symmetric", "eigvals", "sqrtm")]
    assert values[0] > 0
    assert np.allclose(values, values[0], rtol=1e-8)
    assert a.fid(b) == pytest.approx(b.fid(a), rel=1e-10)


def test_frechet_distance_matches_torchmetrics_on_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

    from emocli.metrics.fid import FeatureStats, frechet_distance

    real = _gaussian_features(500, 32, seed=5)
    fake = _gaussian_features(420, 32, seed=6, shift=0.3)

    class Passthrough(torch.nn.Module):  # "images" are the features themselves
        num_features = 32

        def forward(self, x):
            return x

    metric = FrechetInceptionDistance(feature=Passthrough())
    for i in range(0, 500, 128):
        metric.update(torch.from_numpy(real[i:i + 128]), real=True)
    for i in range(0, 420, 100):
        metric.update(torch.from_numpy(fake[i:i + 100]), real=False)
    reference = float(metric.compute())

    sr, sf = FeatureStats(32), FeatureStats(32)
    for i in range(0, 500, 77):
        sr.update(real[i:i + 77])
    for i in range(0, 420, 50):
        sf.update(torch.from_numpy(fake[i:i + 50]).float().double())
    ours = frechet_distance(sr.mean, sr.cov, sf.mean, sf.cov)
    assert ours == pytest.approx(reference, rel=1e-4)
    # and torchmetrics' internal formula on exactly our statistics
    internal = float(_compute_fid(torch.from_numpy(sr.mean), torch.from_numpy(sr.cov),
                                  torch.from_numpy(sf.mean), torch.from_numpy(sf.cov)))
    assert ours == pytest.approx(internal, rel=1e-8)


def test_feature_stats_accumulate_pool_and_npz(tmp_path):
    from emocli.metrics.fid import FeatureStats, aggregated_fid

    groups = [_gaussian_features(n, 10, seed=10 + i, shift=i) for i, n in enumerate((40, 57, 3))]
    stats = []
    for g in groups:
        s = FeatureStats(10)
        for i in range(0, len(g), 7):
            s.update(torch.from_numpy(g[i:i + 7]).float())  # float32 batches, float64 accumulation
        stats.append(s)
        assert s.n == len(g)
        assert np.allclose(s.mean, g.astype(np.float32).mean(0), atol=1e-6)
        assert np.allclose(s.cov, np.cov(g.astype(np.float32).astype(np.float64), rowvar=False), atol=1e-6)

    pooled = FeatureStats.pool(stats)
    concat = FeatureStats.from_features(np.concatenate(groups).astype(np.float32))
    assert pooled.n == concat.n == 100
    assert np.allclose(pooled.mean, concat.mean, atol=1e-12)
    assert np.allclose(pooled.cov, concat.cov, atol=1e-10)

    path = pooled.save(tmp_path / "stats.npz")
    loaded = FeatureStats.load(path)
    assert loaded.n == 100 and np.array_equal(loaded.mean, pooled.mean) and np.allclose(loaded.cov, pooled.cov)
    assert np.allclose(loaded.merge(stats[0]).cov, FeatureStats.pool([pooled, stats[0]]).cov)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"n", "mean", "cov", "format"}

    np.savez(tmp_path / "pytorch_fid_style.npz", mu=concat.mean, sigma=concat.cov)
    legacy = FeatureStats.load(tmp_path / "pytorch_fid_style.npz")
    assert legacy.n is None and legacy.fid(concat) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(EmoError, match="cannot be pooled"):
        legacy.merge(concat)

    real = {"awe": stats[0], "fear": stats[1]}
    fake = {"awe": FeatureStats.from_features(groups[0] + 0.1), "fear": FeatureStats.from_features(groups[1] - 0.2)}
    report = aggregated_fid(real, fake)
    assert set(report["per_emotion"]) == {"awe", "fear"}
    expected = FeatureStats.from_features(np.concatenate([groups[0] + 0.1, groups[1] - 0.2])).fid(
        FeatureStats.from_features(np.concatenate(groups[:2])))
    assert report["aggregated"] == pytest.approx(expected, rel=1e-6)  # real side accumulated from float32


def test_tf1_bilinear_resize_semantics():
    from emocli.metrics.fid import resize_bilinear_tf1

    row = torch.tensor([[[[10.0, 20.0]]]])  # 1x2 -> 1x4: source x = dst * 0.5, right edge replicated
    up = resize_bilinear_tf1(row.expand(1, 1, 1, 2), (1, 4))
    assert up.flatten().tolist() == [10.0, 15.0, 20.0, 20.0]
    down = resize_bilinear_tf1(torch.arange(16.0).view(1, 1, 4, 4), (2, 2))  # picks rows/cols 0 and 2
    assert down.flatten().tolist() == [0.0, 2.0, 8.0, 10.0]
    x = torch.rand(1, 3, 5, 7)
    assert torch.equal(resize_bilinear_tf1(x, (5, 7)), x)


def test_inception_preprocessing_modes():
    from emocli.metrics.fid import preprocess_inception

    black_white = torch.zeros(2, 3, 32, 40, dtype=torch.uint8)
    black_white[1] = 255
    tf = preprocess_inception(black_white, "tf")
    assert tf.shape == (2, 3, 299, 299)
    assert tf[0].unique().tolist() == [-1.0] and tf[1].unique().tolist() == [127 / 128]
    pt = preprocess_inception(black_white, "pytorch")
    assert torch.allclose(pt[0], torch.tensor(-1.0)) and torch.allclose(pt[1], torch.tensor(1.0))
    clean = preprocess_inception(black_white, "clean")
    assert clean.shape == (2, 3, 299, 299) and torch.allclose(clean[1], torch.tensor(127 / 128))
    # float [0, 1] inputs are quantised first: rounding (default) or torchmetrics' truncation
    value = torch.full((1, 3, 8, 8), 100.6 / 255)
    assert preprocess_inception(value, "tf", quantize="round")[0, 0, 0, 0] * 128 + 128 == pytest.approx(101)
    assert preprocess_inception(value, "tf", quantize="truncate")[0, 0, 0, 0] * 128 + 128 == pytest.approx(100)
    with pytest.raises(EmoError, match="valid: tf, pytorch, clean"):
        preprocess_inception(black_white, "bicubic")


def test_inception_v3_architecture_random_weights(tmp_path):
    from emocli.metrics.fid import InceptionFeatures, load_inception_weights

    torch.manual_seed(0)
    extractor = InceptionFeatures()
    keys = extractor.net.state_dict()
    # torchvision Inception3 trunk without fc and AuxLogits; names of the published FID weight files
    assert sum(p.numel() for p in extractor.parameters()) == 21_785_568
    assert "Mixed_7c.branch_pool.conv.weight" in keys and "Conv2d_1a_3x3.bn.running_var" in keys
    assert not extractor.training
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    feats = extractor(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()

    # a file in the published layout (extra fc of 1008 classes, no num_batches_tracked) loads
    state = {k: v for k, v in keys.items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-test.pth")
    loaded = InceptionFeatures.from_file(tmp_path / "pt_inception-2015-12-05-test.pth")
    for k, v in loaded.net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, keys[k]), k
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "inception.safetensors"))
    loaded = InceptionFeatures.from_file(tmp_path / "inception.safetensors", mode="pytorch")
    assert loaded.mode == "pytorch"
    assert torch.equal(loaded.net.Mixed_6e.branch7x7dbl_5.conv.weight, keys["Mixed_6e.branch7x7dbl_5.conv.weight"])

    bad = dict(state)
    del bad["Mixed_5b.branch1x1.conv.weight"]
    with pytest.raises(EmoError, match="1 missing"):
        load_inception_weights(extractor.net, bad)


def test_inception_missing_weights_error_names_file_and_key(tmp_path):
    from emocli.metrics.fid import InceptionFeatures

    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(EmoError) as err:
        InceptionFeatures.from_file(missing)
    assert str(missing) in str(err.value) and "eval.fid.inception_weights" in str(err.value)
    with pytest.raises(EmoError, match="eval.fid.inception_weights"):
        InceptionFeatures.from_file(None)


# ============================================================================================ LPIPS


def _tiny_lpips(seed=0):
    from emocli.metrics.lpips import LPIPS, AlexNetFeatures

    torch.manual_seed(seed)
    return LPIPS(AlexNetFeatures(widths=(8, 16, 16, 12, 12)))


def test_lpips_identity_symmetry_positivity():
    model = _tiny_lpips()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x, x), torch.zeros(3), atol=1e-7)
        d_xy, d_yx = model(x, y), model(y, x)
    assert d_xy.shape == (3,)
    assert torch.allclose(d_xy, d_yx, atol=1e-7)
    assert (d_xy > 0).all()
    assert not model.heads_loaded


def test_lpips_range_conversion():
    from emocli.metrics.lpips import to_lpips_range

    x01 = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert to_lpips_range(x01).flatten()[:3].tolist() == [-1.0, 0.0, 1.0]
    u8 = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 1, 2)
    assert to_lpips_range(u8).unique().tolist() == [-1.0, 1.0]
    assert torch.equal(to_lpips_range(x01, "raw"), x01.float())  # EmoGen's original (buggy) feeding

    model = _tiny_lpips()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    converted = model.distance(a, b)  # [0, 1] detected and mapped to [-1, 1]
    with torch.no_grad():
        assert torch.allclose(converted, model(a * 2 - 1, b * 2 - 1))
        assert not torch.allclose(converted, model(a, b))  # feeding [0, 1] directly gives other numbers


def test_lpips_heads_from_alex_pth_format_and_formula(tmp_path):
    from emocli.metrics.lpips import SCALE, SHIFT

    model = _tiny_lpips(seed=1)
    widths = model.net.widths
    gen = torch.Generator().manual_seed(0)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for k, c in enumerate(widths)}
    torch.save(heads, tmp_path / "alex.pth")
    model.load_heads(str(tmp_path / "alex.pth"))
    assert model.heads_loaded
    assert torch.equal(model.state_dict()["lin3.model.1.weight"], heads["lin3.model.1.weight"])

    x, y = torch.rand(2, 3, 72, 64) * 2 - 1, torch.rand(2, 3, 72, 64) * 2 - 1
    shift, scale = torch.tensor(SHIFT).view(1, 3, 1, 1), torch.tensor(SCALE).view(1, 3, 1, 1)
    with torch.no_grad():
        got = model(x, y)
        fx, fy = model.net((x - shift) / scale), model.net((y - shift) / scale)
    expected = torch.zeros(2)
    for k, (a, b) in enumerate(zip(fx, fy)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        expected += ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)

    with pytest.raises(EmoError, match="lin0.model.1.weight"):
        model.load_heads({"lin1.model.1.weight": heads["lin1.model.1.weight"]})
    with pytest.raises(EmoError, match="eval.lpips.head_weights"):
        model.load_heads(str(tmp_path / "absent.pth"))


def test_lpips_alexnet_loads_torchvision_layout(tmp_path):
    from emocli.metrics.lpips import AlexNetFeatures

    torch.manual_seed(0)
    source = AlexNetFeatures()  # full-size widths 64/192/384/256/256
    state = {k: v.clone() for k, v in source.state_dict().items()}
    assert sorted(k.split(".")[1] for k in state if k.endswith("weight")) == ["0", "10", "3", "6", "8"]
    state["classifier.1.weight"] = torch.zeros(4096, 9216)  # a full torchvision alexnet file has these too
    state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "alexnet-owt-test.pth")
    target = AlexNetFeatures().load(str(tmp_path / "alexnet-owt-test.pth"))
    assert torch.equal(target.features[10].weight, source.features[10].weight)
    with pytest.raises(EmoError, match="not a torchvision AlexNet"):
        AlexNetFeatures(widths=(8, 16, 16, 12, 12)).load(state)


def test_lpips_diversity_pairs_stay_within_emotions():
    from emocli.metrics.lpips import lpips_diversity

    model = _tiny_lpips()
    torch.manual_seed(3)
    base = torch.rand(3, 3, 64, 64)
    images = {  # inside an emotion all images are identical; emotions differ from each other
        "awe": base[0][None].expand(6, -1, -1, -1),
        "fear": base[1][None].expand(5, -1, -1, -1),
        "anger": [base[2]] * 4,
        "sadness": base[:1],  # a single image: no pair, skipped
    }
    report = lpips_diversity(images, pairs_per_emotion=10, seed=0, model=model)
    assert report["pairs"] == {"awe": 10, "fear": 10, "anger": 6}  # anger has only C(4,2)=6 pairs
    assert report["skipped"] == ["sadness"]
    assert report["lpips"] == pytest.approx(0.0, abs=1e-6)  # a cross-emotion leak would make this > 0

    varied = {"awe": torch.rand(8, 3, 64, 64), "fear": torch.rand(7, 3, 64, 64)}
    one = lpips_diversity(varied, 5, 7, model=model)
    two = lpips_diversity(dict(reversed(list(varied.items()))), 5, 7, model=model, batch_size=2)
    assert one["per_emotion"] == pytest.approx(two["per_emotion"], rel=1e-5)  # seeded per emotion name
    assert one["lpips"] == pytest.approx(np.mean(list(one["per_emotion"].values())))
    assert one["lpips"] > 0


def test_sample_pairs_are_distinct_and_within_range():
    from emocli.metrics.common import sample_pairs, within_group_pairs

    rng = np.random.default_rng(0)
    for n, k in ((50, 10), (10, 30), (10, 45), (10, 100), (1, 5), (2, 3)):
        pairs = sample_pairs(n, k, rng)
        assert len(pairs) == min(k, n * (n - 1) // 2)
        assert len(set(pairs)) == len(pairs)
        assert all(0 <= i < j < n for i, j in pairs)
    a = within_group_pairs({"awe": 20, "fear": 30}, 10, seed=1)
    b = within_group_pairs({"fear": 30, "awe": 20}, 10, seed=1)
    assert a == b and a["awe"] != within_group_pairs({"awe": 20}, 10, seed=2)["awe"]


# ============================================================================================ CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP built from CLIPConfig, a CLIPTokenizer from a hand-written vocab, explicit-size processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                              model_max_length=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_hidden_layers=1, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        projection_dim=12,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval(), processor


def test_clip_image_features_shapes_and_input_forms(tiny_clip):
    from emocli.metrics.clip_scores import clip_image_features

    model, processor = tiny_clip
    images_u8 = torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8)
    out = clip_image_features(model, processor, images_u8, batch_size=2)
    assert out.features.shape == (5, 12) and out.normalized.shape == (5, 12)
    assert torch.allclose(out.normalized.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(out.normalized, out.features / out.features.norm(dim=-1, keepdim=True), atol=1e-6)
    as_float = clip_image_features(model, processor, images_u8.float() / 255, batch_size=5)
    assert torch.allclose(as_float.features, out.features, atol=1e-5)  # [0, 1] floats are not rescaled twice
    from PIL import Image

    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images_u8]
    assert torch.allclose(clip_image_features(model, processor, pil).features, out.features, atol=1e-5)


def test_clip_i_pairings(tiny_clip):
    from emocli.metrics.clip_scores import clip_i, clip_i_score

    gen, ref = torch.randn(4, 12, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    g = gen / gen.norm(dim=1, keepdim=True)
    r = ref / ref.norm(dim=1, keepdim=True)
    assert clip_i(gen, ref)["clip_i"] == pytest.approx(float((g @ r.T).mean()))
    mean_cos = float((g.mean(0) @ r.mean(0)) / (g.mean(0).norm() * r.mean(0).norm()))
    assert clip_i(gen, ref, "mean_embedding")["clip_i"] == pytest.approx(mean_cos)
    assert clip_i(gen, gen * 3.0, "matched")["clip_i"] == pytest.approx(1.0)
    with pytest.raises(EmoError, match="as many"):
        clip_i(gen, ref, "matched")
    with pytest.raises(EmoError, match="all_pairs, matched, mean_embedding"):
        clip_i(gen, ref, "pairwise")

    model, processor = tiny_clip
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    report = clip_i_score(model, processor, images, images, pairing="matched")
    assert report["clip_i"] == pytest.approx(1.0, abs=1e-6) and report["pairing"] == "matched"


def test_clip_t_conventions(tiny_clip):
    from emocli.metrics.clip_scores import clip_image_features, clip_t, clip_t_score, clip_text_features

    img, txt = torch.randn(6, 12), torch.randn(6, 12)
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=1)
    report = clip_t(img, txt)
    assert report["clip_t"] == pytest.approx(float(cos.mean()))
    assert report["clipscore"] == pytest.approx(float((2.5 * cos.clamp(min=0)).mean()))
    assert report["clip_score_100"] == pytest.approx(max(100 * float(cos.mean()), 0.0))
    assert report["per_image"] == pytest.approx(cos.tolist())

    model, processor = tiny_clip
    images = torch.randint(0, 256, (3, 3, 36, 32), dtype=torch.uint8)
    prompts = ["an image of awe", "an image of fear", "a very long prompt " * 10]  # truncated, no error
    report = clip_t_score(model, processor, images, prompts, batch_size=2)
    im = clip_image_features(model, processor, images).normalized
    tx = clip_text_features(model, processor, prompts).normalized
    assert report["per_image"] == pytest.approx((im * tx).sum(-1).tolist(), abs=1e-5)
    single = clip_t_score(model, processor, images, "an image of awe")
    assert single["n"] == 3


# ============================================================================================ Emo-A


def test_emo_a_official_classifier_loads_and_predicts(tmp_path):
    from conftest import shared_path

    from emocli.metrics.emotion import EmotionHead, emotion_accuracy

    path = shared_path(*OFFICIAL_CLASSIFIER)  # skips, saying so, when the release is not next to the checkout
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    weight, bias = raw["fc.weight"], raw["fc.bias"]
    assert weight.shape == (8, 768) and bias.shape == (8,)

    head = EmotionHead.load_official(path)
    features = torch.randn(64, 768, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        logits = head(features)
    by_hand = features @ weight.T + bias
    assert torch.allclose(logits, by_hand, atol=1e-5)
    assert torch.equal(logits.argmax(1), by_hand.argmax(1))

    torch.save({f"module.{k}": v for k, v in raw.items()}, tmp_path / "ddp.pth")  # DataParallel-style keys
    assert torch.equal(EmotionHead.load_official(tmp_path / "ddp.pth").fc.weight, weight)
    report = emotion_accuracy(logits, by_hand.argmax(1))
    assert report["accuracy"] == 1.0


def test_emo_a_missing_file_names_recipe_key(tmp_path):
    from emocli.metrics.emotion import EmotionHead

    with pytest.raises(EmoError, match="eval.emo_a.classifier_weights"):
        EmotionHead.load_official(tmp_path / "time_2023-11-12_03-29-best.pth")
    torch.save({"weight": torch.zeros(8, 768)}, tmp_path / "other.pth")
    with pytest.raises(EmoError, match="fc.weight"):
        EmotionHead.load_official(tmp_path / "other.pth")


def test_emotion_accuracy_hand_computed():
    from emocli.metrics.emotion import emotion_accuracy

    # EmoSet order: amusement awe contentment excitement | anger disgust fear sadness
    logits = torch.full((5, 8), -5.0)
    logits[0, 0] = 5.0                     # amusement -> amusement (right)
    logits[1, 2] = 5.0                     # awe -> contentment (wrong class, right polarity)
    logits[2, 6] = 5.0                     # anger -> fear (wrong class, right polarity)
    logits[3, 7] = 5.0                     # sadness -> sadness (right)
    logits[4, 3] = 2.0
    logits[4, 4:] = 1.5                    # fear -> excitement top-1, but negative mass wins polarity
    labels = ["amusement", "awe", "anger", 7, "fear"]
    report = emotion_accuracy(logits, labels)
    assert report["accuracy"] == pytest.approx(2 / 5)
    assert report["polarity_accuracy"] == pytest.approx(5 / 5)
    assert report["per_emotion"]["amusement"] == 1.0 and report["per_emotion"]["awe"] == 0.0
    assert report["per_emotion"]["disgust"] is None
    probs = torch.softmax(logits.double(), 1)
    assert report["mean_true_prob"] == pytest.approx(float(probs[range(5), [0, 1, 4, 7, 6]].mean()))
    confusion = np.array(report["confusion"])
    assert confusion.shape == (8, 8) and confusion.sum() == 5
    assert confusion[0, 0] == 1 and confusion[1, 2] == 1 and confusion[4, 6] == 1 and confusion[6, 3] == 1
    with pytest.raises(EmoError, match="unknown EmoSet emotion"):
        emotion_accuracy(logits, ["joy"] * 5)


# ============================================================================================ Sem-C / Sem-D


def _tiny_resnet(num_labels, seed):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", num_labels=num_labels)
    return ResNetForImageClassification(config).eval()


def test_imagenet_preprocess_resize_crop_normalise():
    from emocli.metrics.semantic import IMAGENET_MEAN, IMAGENET_STD, imagenet_preprocess

    gray = torch.full((2, 3, 300, 400), 128, dtype=torch.uint8)
    x = imagenet_preprocess(gray)
    assert x.shape == (2, 3, 224, 224)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 100, 100], expected.float(), atol=1e-5)
    assert imagenet_preprocess(gray[0], resize=40, crop=32).shape == (1, 3, 32, 32)


def test_semantic_clarity_tiny_resnets():
    from emocli.metrics.semantic import imagenet_preprocess, semantic_clarity

    scene, objects = _tiny_resnet(7, seed=0), _tiny_resnet(5, seed=1)
    images = torch.randint(0, 256, (5, 3, 48, 40), dtype=torch.uint8)
    report = semantic_clarity(images, scene, objects, batch_size=2, resize=40, crop=32)
    x = imagenet_preprocess(images, resize=40, crop=32)
    with torch.no_grad():
        s = torch.softmax(scene(x).logits.double(), 1).amax(1)
        o = torch.softmax(objects(x).logits.double(), 1).amax(1)
    assert report["per_image"] == pytest.approx(torch.maximum(s, o).tolist(), rel=1e-6)
    assert report["sem_c"] == pytest.approx(float(torch.maximum(s, o).mean()), rel=1e-6)
    assert report["n"] == 5 and 1 / 5 <= report["sem_c"] <= 1
    # plain callables returning logits work too
    plain = semantic_clarity(x, lambda t: scene(t).logits, lambda t: objects(t).logits, preprocessed=True)
    assert plain["sem_c"] == pytest.approx(report["sem_c"], rel=1e-6)


def test_resnet50_torchvision_layout_loads_places_style_checkpoint(tmp_path):
    from emocli.metrics.semantic import SCENE_KEY, ResNet50

    with torch.device("meta"):  # layout and size of the real network, without initialising 25M weights
        full = ResNet50(num_classes=1000)
    keys = full.state_dict()
    assert "layer4.2.bn3.running_var" in keys and "layer1.0.downsample.0.weight" in keys
    assert sum(p.numel() for p in full.parameters()) == 25_557_032  # = torchvision resnet50

    torch.manual_seed(0)
    tiny = ResNet50(num_classes=365, width=4)
    assert tiny(torch.rand(2, 3, 64, 64)).shape == (2, 365)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    checkpoint = {"epoch": 90, "arch": "resnet50", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(checkpoint, tmp_path / "resnet50_places365.pth.tar")
    loaded = ResNet50.from_file(tmp_path / "resnet50_places365.pth.tar", recipe_key=SCENE_KEY)
    assert loaded.fc.out_features == 365
    assert torch.equal(loaded.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    with pytest.raises(EmoError, match="eval.sem_c.scene_weights"):
        ResNet50.from_file(tmp_path / "absent.pth.tar", recipe_key=SCENE_KEY)


def test_semantic_diversity_mse_and_cosine(tiny_clip):
    from emocli.metrics.common import within_group_pairs
    from emocli.metrics.semantic import semantic_diversity, semantic_diversity_images

    gen = torch.Generator().manual_seed(0)
    feats = {"awe": torch.randn(5, 12, generator=gen), "fear": torch.randn(4, 12, generator=gen) * 3,
             "anger": torch.randn(1, 12, generator=gen)}
    report = semantic_diversity(feats, pairs_per_emotion=100, seed=0)  # more than C(n,2): all pairs
    assert report["pairs"] == {"awe": 10, "fear": 6} and report["skipped"] == ["anger"]
    per = {}
    for emotion in ("awe", "fear"):
        f = feats[emotion].double()
        mse = [float(((f[i] - f[j]) ** 2).mean()) for i in range(len(f)) for j in range(i + 1, len(f))]
        cos = [1 - float(torch.nn.functional.cosine_similarity(f[i], f[j], dim=0))
               for i in range(len(f)) for j in range(i + 1, len(f))]
        per[emotion] = (np.mean(mse), np.mean(cos))
        assert report["per_emotion"][emotion]["mse"] == pytest.approx(per[emotion][0])
        assert report["per_emotion"][emotion]["cosine"] == pytest.approx(per[emotion][1])
    assert report["sem_d_mse"] == pytest.approx(np.mean([v[0] for v in per.values()]))
    assert report["sem_d_cosine"] == pytest.approx(np.mean([v[1] for v in per.values()]))

    # from images: same pairs as LPIPS diversity would draw, raw CLIP features
    from emocli.metrics.clip_scores import clip_image_features

    model, processor = tiny_clip
    images = {"awe": torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8),
              "fear": torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)}
    from_images = semantic_diversity_images(model, processor, images, pairs_per_emotion=4, seed=3)
    all_feats = {e: clip_image_features(model, processor, im).features for e, im in images.items()}
    assert from_images["sem_d_mse"] == pytest.approx(semantic_diversity(all_feats, 4, 3)["sem_d_mse"], rel=1e-5)
    assert from_images["pairs"] == {e: len(p) for e, p in within_group_pairs({"awe": 6, "fear": 5}, 4, 3).items()}


# ============================================================================================ classification


def test_classification_metrics_hand_computed():
    from emocli.metrics.classification import accuracy, classification_report, confusion_matrix, macro_f1

    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert confusion_matrix(y_true, y_pred).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix(y_true, y_pred, num_classes=4).shape == (4, 4)
    # per-class F1: 0.5, 0.8, 2/3
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # averaging over 4 classes, the absent class 3 counts as 0
    assert macro_f1(y_true, y_pred, labels=range(4)) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)
    report = classification_report(np.array(y_true), torch.tensor(y_pred), ["a", "b", "c"])
    assert report["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0,
                                        "f1": pytest.approx(0.8), "support": 2}
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    with pytest.raises(EmoError, match="differ in length"):
        accuracy([0, 1], [0])
    with pytest.raises(EmoError, match="integer class indices"):
        accuracy(["a"], ["a"])
