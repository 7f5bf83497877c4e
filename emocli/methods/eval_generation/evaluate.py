"""`emo eval generation`: EmoGen's Table 1 metrics and CLIP-I/CLIP-T over an `emo sample` folder.

Pipeline (one run directory, written by `emo eval generation` through `prepare_run`):

1. read the generated images (``SAMPLES/<emotion>/*.png|jpg`` + ``.json`` sidecars) and decide which metrics
   run: ``metrics.compute: auto`` runs every metric whose weights are configured and notes the others;
   an explicit list makes a missing backbone an error. Every configured backbone is loaded first, so a
   missing file fails in seconds, naming its recipe key.
2. one pass over the generated images: each batch is decoded once and given to every backbone that lacks
   it (CLIP, FID Inception, the Sem-C classifiers); features are cached in ``RUN/cache`` (or
   ``data.feature_cache``) keyed by file path + mtime, and shared by every metric: the CLIP features serve
   Emo-A, Sem-D, CLIP-I and CLIP-T.
3. reference statistics per emotion (FID Inception mean/covariance, mean normalised CLIP embedding), computed
   once and cached next to the prepared EmoSet (``PREPARED/eval-cache`` or ``data.reference_cache``).
4. the metrics, each with its convention (see `emocli.metrics.*` and docs/metrics.md); LPIPS pair distances
   are cached too.
5. ``metrics.json``, ``per_image.jsonl``, ``report.md`` (Table 1's shape, the paper's rows on request),
   ``report.html`` and ``plots/*.png``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import torch

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.runs import Run
from emocli.written import publish

log = logging.getLogger("emocli")

RESULT_FORMAT = "emocli.eval-generation/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

# metric -> (recipe keys it needs under `models`, keys only this metric uses)
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fid": (("inception",), ("inception",)),
    "lpips": (("lpips_backbone", "lpips_heads"), ("lpips_backbone", "lpips_heads")),
    "emo_a": (("clip", "emotion_head"), ("emotion_head",)),
    "sem_c": (("scene_classifier", "object_classifier"), ("scene_classifier", "object_classifier")),
    "sem_d": (("clip",), ()),
    "clip_i": (("clip",), ()),
    "clip_t": (("clip",), ()),
}
WHAT = {
    "clip": "CLIP model (Hub id or folder)",
    "inception": "FID Inception-v3 weights file",
    "lpips_backbone": "LPIPS AlexNet backbone file",
    "lpips_heads": "LPIPS linear heads file",
    "scene_classifier": "Places365 ResNet-50 file",
    "object_classifier": "ImageNet ResNet-50 file",
    "emotion_head": "Emo-A head (file or emotion-classifier run)",
}
DISPLAY = {"fid": "FID", "lpips": "LPIPS", "emo_a": "Emo-A", "sem_c": "Sem-C", "sem_d": "Sem-D",
           "clip_i": "CLIP-I", "clip_t": "CLIP-T"}


# --------------------------------------------------------------------------------------------- planning


def plan_metrics(recipe) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {skipped metric: reason}); raises EmoError on a contradictory configuration."""
    from emocli.methods.eval_generation.config import METRIC_NAMES

    models = recipe.models
    requested = recipe.metrics.compute
    explicit = requested != "auto"
    names = list(dict.fromkeys(requested)) if explicit else list(METRIC_NAMES)
    plan, skipped = [], {}
    for name in names:
        required, own = NEEDS[name]
        unset = [k for k in required if getattr(models, k) in (None, "")]
        if not unset:
            plan.append(name)
            continue
        if explicit:
            raise EmoError(f"{DISPLAY[name]} is requested (metrics.compute) but models.{unset[0]} is not set "
                           f"({WHAT[unset[0]]}); set it, or drop {name} from metrics.compute")
        partly = [k for k in own if getattr(models, k) not in (None, "")]
        if partly:
            raise EmoError(f"{DISPLAY[name]}: models.{partly[0]} is set but models.{unset[0]} is not "
                           f"({WHAT[unset[0]]}); set both, or neither to skip {DISPLAY[name]}")
        skipped[name] = "not computed: " + ", ".join(f"models.{k} ({WHAT[k]})" for k in unset) + " not set"
    return plan, skipped


def read_generated(data) -> tuple[dict[str, list[Path]], dict[str, dict]]:
    """({emotion: [image paths]}, {path: sidecar params}) of an `emo sample` folder."""
    root = Path(data.samples).expanduser()
    if not root.is_dir():
        raise EmoError(f"samples folder {str(root)!r} does not exist (recipe key data.samples); write one with "
                       f"`emo sample --emotion all --out ...`")
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            continue
        if folder.name not in EMOSET.labels:
            raise EmoError(f"{folder}: folder name {folder.name!r} is not an EmoSet emotion "
                           f"({', '.join(EMOSET.labels)}); `emo sample` writes SAMPLES/<emotion>/<name>.png")
        found[folder.name] = images
    if data.emotions is not None:
        wanted = [EMOSET.validate(e) for e in data.emotions]
        absent = [e for e in wanted if e not in found]
        if absent:
            raise EmoError(f"{root} has no images of {', '.join(absent)} (recipe key data.emotions)")
        found = {e: found[e] for e in wanted}
    if not found:
        raise EmoError(f"{root} holds no <emotion>/*.png images (recipe key data.samples)")
    if data.max_samples_per_emotion:
        found = {e: paths[: data.max_samples_per_emotion] for e, paths in found.items()}
    order = [e for e in EMOSET.labels if e in found]
    found = {e: found[e] for e in order}
    params = {}
    for paths in found.values():
        for p in paths:
            side = p.with_suffix(".json")
            if side.is_file():
                try:
                    params[str(p)] = json.loads(side.read_text())
                except ValueError:
                    params[str(p)] = {}
    return found, params


# --------------------------------------------------------------------------------------------- LPIPS


def lpips_scores(generated: dict[str, list[Path]], model, pairs_per_emotion: int, seed: int, cache_dir: Path,
                 identity: dict, value_range: str = "correct", resize: int | None = None,
                 batch_size: int = 32, sampling: str = "within") -> tuple[dict, dict]:
    """LPIPS diversity over the same within-emotion pairs as `emocli.metrics.lpips.lpips_diversity`
    (``sampling="within"``), or over EmoGen's original cumulative cross-emotion pairs (``"cumulative"``,
    `emocli.metrics.common.cumulative_pairs`), with the distance of every pair cached (keyed by both
    images' path + mtime). Returns (result, counts)."""
    from emocli.data.emoset import CorruptImage, load_rgb
    from emocli.evaluation.cache import digest, image_key
    from emocli.metrics.common import cumulative_pairs, to_uint8_chw, within_group_pairs

    file = cache_dir / f"lpips-{digest(identity)}.json"
    table: dict[str, float] = {}
    if file.is_file():
        try:
            table = dict(json.loads(file.read_text())["pairs"])
        except (ValueError, KeyError, TypeError):
            log.warning("LPIPS pair cache %s is unreadable; recomputing", file)
    sizes = {e: len(p) for e, p in generated.items()}
    if sampling == "cumulative":
        pairs = cumulative_pairs(sizes, pairs_per_emotion, seed)
    else:
        pairs = {e: [((e, i), (e, j)) for i, j in ps] for e, ps in within_group_pairs(sizes, pairs_per_emotion,
                                                                                      seed).items()}
    keys = {e: [image_key(p) for p in paths] for e, paths in generated.items()}

    def pair_key(a, b) -> str:
        return f"{keys[a[0]][a[1]]}||{keys[b[0]][b[1]]}"

    todo = [(a, b) for ps in pairs.values() for a, b in ps if pair_key(a, b) not in table]
    counts = {"cached": sum(len(ps) for ps in pairs.values()) - len(todo), "computed": len(todo)}
    images: dict[tuple[str, int], torch.Tensor] = {}

    def image(item: tuple[str, int]) -> torch.Tensor:
        e, i = item
        if (e, i) not in images:
            try:
                im = load_rgb(generated[e][i])
            except CorruptImage as err:
                raise EmoError(f"unreadable image {err.path}: {err.reason}") from None
            if resize:
                from PIL import Image

                im = im.resize((resize, resize), Image.Resampling.BICUBIC)
            images[(e, i)] = to_uint8_chw(im)
        return images[(e, i)]

    step = max(1, int(batch_size))
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        groups: dict[tuple, list] = {}
        for pa, pb in chunk:  # equal sizes batch together
            a, b = image(pa), image(pb)
            if a.shape != b.shape:
                raise EmoError(f"LPIPS compares images of one size: {generated[pa[0]][pa[1]].name} is "
                               f"{tuple(a.shape[1:])}, {generated[pb[0]][pb[1]].name} is {tuple(b.shape[1:])}; "
                               f"set metrics.lpips_resize")
            groups.setdefault(tuple(a.shape), []).append((pa, pb, a, b))
        for items in groups.values():
            xa = torch.stack([it[2] for it in items])
            xb = torch.stack([it[3] for it in items])
            if value_range == "raw":  # EmoGen's mistake: [0, 1] floats fed as if they were [-1, 1]
                d = model.distance(xa.float() / 255.0, xb.float() / 255.0, value_range="raw")
            else:
                d = model.distance(xa, xb, value_range="uint8")
            for (pa, pb, _, _), v in zip(items, d.double().tolist()):
                table[pair_key(pa, pb)] = float(v)
    if todo:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_text(json.dumps({"identity": identity, "pairs": table}))
        publish(tmp, file)
    per_emotion, counts_e, values_all, skipped, pair_values = {}, {}, [], [], {}
    for e, ps in pairs.items():
        if not ps:
            skipped.append(e)
            continue
        values = np.array([table[pair_key(a, b)] for a, b in ps], dtype=np.float64)
        per_emotion[e] = float(values.mean())
        counts_e[e] = len(ps)
        values_all.append(values)
        pair_values[e] = values
    if not per_emotion:
        raise EmoError("LPIPS diversity needs at least one emotion with two or more images")
    result = {"value": float(np.mean(list(per_emotion.values()))), "per_emotion": per_emotion,
              "pooled": float(np.concatenate(values_all).mean()), "pairs": counts_e, "skipped_emotions": skipped,
              "_units": pair_values}
    return result, counts


# --------------------------------------------------------------------------------------------- the run


def _clip_t_text(template: str, emotion: str, params: dict) -> str:
    fields = {"emotion": emotion, "object": params.get("object") or "", "prompt": params.get("prompt") or ""}
    try:
        text = template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise EmoError(f"metrics.clip_t_template {template!r}: {e}; fields: {{emotion}}, {{object}}, {{prompt}}") from None
    return re.sub(r"\s+", " ", text).strip()


def _split(features: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for e, n in sizes.items():
        out[e] = features[start:start + n]
        start += n
    return out


def evaluate_generation(recipe, out_dir) -> dict:
    """Compute everything for `recipe`, write the outputs into `out_dir`, return the metrics.json dict."""
    from emocli.evaluation import backbones as bb
    from emocli.evaluation.cache import FeatureCache, extract_features, file_identity
    from emocli.evaluation.provenance import check_clip, check_weights
    from emocli.evaluation.reference import (
        normalise,
        reference_images,
        reference_stats,
        stats_root,
    )
    from emocli.methods.eval_generation.prompts import evaluate_prompt_layout, is_prompt_layout

    if is_prompt_layout(recipe.data.samples):  # `emo sample --run LDM_RUN --prompts ...`: FID, CLIP-I, CLIP-T
        return evaluate_prompt_layout(recipe, out_dir)
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    data, models, cfg = recipe.data, recipe.models, recipe.metrics
    generated, params = read_generated(data)
    plan, skipped = plan_metrics(recipe)
    emotions = list(generated)
    sizes = {e: len(generated[e]) for e in emotions}
    if not plan:
        raise EmoError("no metric can run: configure at least one backbone under models.* (see docs/metrics.md)")

    # ---- every configured weights file must exist, then every backbone loads: failures come before any work
    for key in dict.fromkeys(k for name in plan for k in NEEDS[name][0] if k != "clip"):
        bb.require_path(getattr(models, key), f"models.{key}", WHAT[key])
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    device = bb.resolve_device(models.device)
    use = set(plan)
    clip_ex = inception_ex = semc_ex = lpips_model = head = None
    head_info = None
    weights: dict[str, dict] = {}  # recipe key under models -> provenance (emocli.evaluation.provenance)
    if use & {"emo_a", "sem_d", "clip_i", "clip_t"}:
        model, processor = bb.load_clip(models.clip, "models.clip", device)
        clip_ex = bb.ClipImageExtractor(model, processor, models.clip, cfg.batch_size)
        weights["clip"] = check_clip(models.clip, model)
    if "fid" in use:
        inception = bb.load_inception(models.inception, "models.inception", cfg.fid_preprocess, device)
        inception_ex = bb.InceptionExtractor(inception, models.inception, cfg.fid_preprocess)
        weights["inception"] = inception.provenance
    if "sem_c" in use:
        scene = bb.load_resnet(models.scene_classifier, "models.scene_classifier",
                               "Sem-C scene classifier (resnet50_places365.pth.tar)", device, "scene_classifier")
        objects = bb.load_resnet(models.object_classifier, "models.object_classifier",
                                 "Sem-C object classifier (resnet50-0676ba61.pth)", device, "object_classifier")
        weights["scene_classifier"], weights["object_classifier"] = scene.provenance, objects.provenance
        semc_ex = bb.SemCExtractor(scene, objects, models.scene_classifier, models.object_classifier)
    if "lpips" in use:
        lpips_model = bb.load_lpips(models.lpips_backbone, models.lpips_heads, "models.lpips_backbone",
                                    "models.lpips_heads", device)
        weights["lpips_backbone"], weights["lpips_heads"] = (lpips_model.provenance["backbone"],
                                                             lpips_model.provenance["heads"])
    if "emo_a" in use:
        from emocli.methods.emotion_classifier.head import load_emotion_head

        head, head_info = load_emotion_head(models.emotion_head, "models.emotion_head")
        if clip_ex.dim and head_info["dim"] != clip_ex.dim:
            raise EmoError(f"the Emo-A head {head_info['source']!r} reads {head_info['dim']}-d features but the CLIP "
                           f"model {models.clip!r} gives {clip_ex.dim}-d ones (recipe keys models.emotion_head, "
                           f"models.clip); EmoGen's head needs openai/clip-vit-large-patch14")
        if head_info.get("clip") and str(head_info["clip"]) != str(models.clip):
            log.warning("the Emo-A head was trained on CLIP %s, evaluating with %s", head_info["clip"], models.clip)
        weights["emotion_head"] = check_weights("emotion_head", head_info["source"], head.state_dict())
        head = head.to(device)
    seconds["load_models"] = time.perf_counter() - t
    log.info("evaluating %d generated images of %d emotions from %s: %s", sum(sizes.values()), len(emotions),
             data.samples, ", ".join(plan))
    for name, why in skipped.items():
        log.warning("%s %s", DISPLAY[name], why)

    # ---- generated images: one pass, every backbone, cached
    t = time.perf_counter()
    feature_dir = Path(data.feature_cache).expanduser() if data.feature_cache else out_dir / "cache"
    extractors = {}
    if clip_ex is not None:
        extractors["clip"] = clip_ex
    if inception_ex is not None:
        extractors["inception"] = inception_ex
    if semc_ex is not None:
        extractors["sem_c"] = semc_ex
    paths = [p for e in emotions for p in generated[e]]
    labels = [e for e in emotions for _ in generated[e]]
    caches = {name: FeatureCache(feature_dir, name, ex.identity) for name, ex in extractors.items()}
    extraction = extract_features(paths, caches, extractors, cfg.batch_size, description="generated images")
    feats = {name: _split(f, sizes) for name, f in extraction.features.items()}
    seconds["generated_features"] = time.perf_counter() - t

    # ---- reference statistics (FID, CLIP-I): computed once, cached next to the prepared EmoSet
    t = time.perf_counter()
    real, ref_status, ref_counts = {}, {}, None
    ref_extractors = {}
    if "fid" in use:
        ref_extractors["inception"] = inception_ex
    if "clip_i" in use:
        ref_extractors["clip"] = clip_ex
    if ref_extractors:
        ref = reference_images(data.prepared, data.reference_split, emotions, data.max_reference_per_emotion)
        root = stats_root(data.prepared, data.reference_cache, out_dir / "cache" / "reference")
        real, ref_status = reference_stats(ref, ref_extractors, root, cfg.batch_size, transform={"clip": normalise})
        ref_counts = {e: len(v) for e, v in ref.items()}
    seconds["reference_statistics"] = time.perf_counter() - t

    # ---- metrics
    t = time.perf_counter()
    results: dict[str, dict] = {}
    per_image = [{"image": str(p), "emotion": e} for p, e in zip(paths, labels)]
    ref_desc = ("all images of the emotion in the prepared EmoSet" if data.reference_split == "all"
                else f"the {data.reference_split} split's images of the emotion")
    if data.max_reference_per_emotion:
        ref_desc += f" (first {data.max_reference_per_emotion})"
    if "fid" in use:
        results["fid"] = _fid(feats["inception"], real["inception"], cfg, ref_desc)
    if "lpips" in use:
        identity = {"backbone": file_identity(models.lpips_backbone), "heads": file_identity(models.lpips_heads),
                    "value_range": cfg.lpips_value_range, "resize": cfg.lpips_resize}
        lp, lp_counts = lpips_scores(generated, lpips_model, cfg.pairs_per_emotion, cfg.pair_seed, feature_dir,
                                     identity, cfg.lpips_value_range, cfg.lpips_resize, cfg.batch_size)
        extraction.counts["lpips_pairs"] = lp_counts
        orig, _ = lpips_scores(generated, lpips_model, cfg.pairs_per_emotion, cfg.pair_seed, feature_dir, identity,
                               cfg.lpips_value_range, cfg.lpips_resize, cfg.batch_size, sampling="cumulative")
        lp["original_pairs"] = _original_pairs_variant("LPIPS", orig["value"], orig["per_emotion"], cfg)
        rng = "[0, 1] fed as [-1, 1] (EmoGen's mistake, for comparison)" if cfg.lpips_value_range == "raw" \
            else "[-1, 1]"
        lp.update(name="LPIPS", higher_is_better=True,
                  convention=f"lpips-v0.1-alex/within-emotion-random-pairs-{cfg.pairs_per_emotion}/"
                             f"mean-of-emotion-means" + ("/raw-inputs" if cfg.lpips_value_range == "raw" else ""),
                  definition=f"LPIPS v0.1 AlexNet distance, inputs {rng}, native size"
                             + (f" resized to {cfg.lpips_resize}" if cfg.lpips_resize else "")
                             + f"; {cfg.pairs_per_emotion} random distinct pairs within each emotion (seed "
                               f"{cfg.pair_seed}); mean per emotion, then the unweighted mean over emotions")
        results["lpips"] = lp
    if "emo_a" in use:
        results["emo_a"], preds = _emo_a(extraction.features["clip"], labels, head, head_info, models.clip)
        for row, (pred, prob) in zip(per_image, preds):
            row["emo_a_pred"], row["emo_a_true_prob"] = pred, prob
    if "sem_c" in use:
        results["sem_c"] = _sem_c(feats["sem_c"])
        for row, v in zip(per_image, extraction.features["sem_c"].amax(1).tolist()):
            row["sem_c"] = v
    if "sem_d" in use:
        results["sem_d"] = _sem_d(feats["clip"], cfg, models.clip)
    if "clip_i" in use:
        results["clip_i"] = _clip_i(feats["clip"], real["clip"], cfg.clip_i_pairing, models.clip, ref_desc)
    if "clip_t" in use:
        texts = [_clip_t_text(cfg.clip_t_template, e, params.get(str(p), {})) for p, e in zip(paths, labels)]
        results["clip_t"] = _clip_t(extraction.features["clip"], texts, labels, clip_ex, cfg.clip_t_template,
                                    models.clip)
        for row, text in zip(per_image, texts):
            row["clip_t_text"] = text
    for name, result_m in results.items():
        result_m["weights"] = {key: weights[key] for key in NEEDS[name][0] if key in weights}
    seconds["metrics"] = time.perf_counter() - t

    # ---- seeded bootstrap intervals, per emotion and pooled
    t = time.perf_counter()
    units = _units(results, feats, labels, cfg)
    seen: dict[str, int] = {}
    for row, e in zip(per_image, labels):  # per-image values, for a paired `--compare`
        k = seen[e] = seen.get(e, -1) + 1
        for name in ("clip_t", "clip_i"):
            if name in units:
                row[name] = float(units[name][e][k])
    pair_rows = _pair_rows(results, units, generated, cfg)
    _intervals(results, units, feats, real, cfg)
    seconds["bootstrap"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start

    result = {
        "format": RESULT_FORMAT,
        "name": recipe.run.name or out_dir.name,
        "run": str(out_dir.resolve()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "samples": str(Path(data.samples).expanduser().resolve()),
        "prepared": str(Path(data.prepared).expanduser().resolve()),
        "reference_split": data.reference_split,
        "reference_bytes": reference_bytes(data.prepared),
        "emotions": emotions,
        "counts": {"generated": sizes, "reference": ref_counts},
        "table1": {DISPLAY[k]: results[k]["value"] for k in DISPLAY if k in results},
        "metrics": {k: results[k] for k in DISPLAY if k in results},
        "skipped": skipped,
        "models": {k: v for k, v in models.model_dump().items() if v is not None},
        "emotion_head": head_info,
        "weights": weights,
        "cache": {"generated": extraction.counts, "feature_dir": str(feature_dir.resolve()),
                  "reference": ref_status},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    with (out_dir / "per_image.jsonl").open("w") as f:
        for row in per_image:
            f.write(json.dumps(row) + "\n")
    with (out_dir / "per_pair.jsonl").open("w") as f:
        for row in pair_rows:
            f.write(json.dumps(row) + "\n")
    from emocli.methods.eval_generation.report import write_reports

    write_reports(result, out_dir, recipe.report, generated, per_image)
    log.info("metrics: %s", ", ".join(f"{k} {v:.4g}" for k, v in result["table1"].items()))
    log.info("wrote %s, %s, %s", out_dir / "metrics.json", out_dir / "report.md", out_dir / "report.html")
    return result


# --------------------------------------------------------------------------------------------- metrics


def reference_bytes(prepared) -> dict | None:
    """How the prepared EmoSet stored its images (prepare.json's ``image_bytes``): original bytes, or how many
    were re-encoded. None for a release folder (its own files) or an older prepared folder."""
    manifest = Path(str(prepared)).expanduser() / "prepare.json"
    try:
        return json.loads(manifest.read_text()).get("image_bytes") if manifest.is_file() else None
    except ValueError:
        return None


def frechet_to_features(features, real, method: str = "auto") -> tuple[float, str]:
    """FID between the generated `features` (N, D) and reference statistics `real` (`FeatureStats`).

    ``method="auto"``: when N - 1 < D (fewer generated images than feature dimensions, the usual case per
    emotion), the exact low-rank form: the nonzero eigenvalues of ``S_real S_gen`` are those of the N x N
    PSD matrix ``Xc S_real Xc^T / (N - 1)`` (``Xc``: centred generated features), so
    ``Tr((S_real S_gen)^(1/2))`` costs one N x N eigendecomposition instead of two D x D ones. Otherwise
    (and for the explicit methods) `emocli.metrics.fid.frechet_distance` on the two statistics
    ("symmetric" under "auto"). Returns (value, the method used).
    """
    from emocli.metrics.bootstrap import fid_to_features
    from emocli.metrics.fid import FeatureStats

    x = np.asarray(torch.as_tensor(features).double().numpy(), dtype=np.float64)
    n, d = x.shape
    if method == "auto" and n - 1 < d:
        return fid_to_features(x, real), "lowrank-exact"
    used = "symmetric" if method == "auto" else method
    return FeatureStats.from_features(x).fid(real, method=used), used


def _fid(fake_features: dict[str, torch.Tensor], real: dict, cfg, ref_desc: str) -> dict:
    from emocli.metrics.fid import FeatureStats

    per, notes, used = {}, [], set()
    for e, f in fake_features.items():
        if f.shape[0] >= 2 and real[e].n >= 2:
            per[e], how = frechet_to_features(f, real[e], cfg.fid_method)
            used.add(how)
        else:
            notes.append(f"{e}: needs 2+ images on each side for its own FID")
    every = torch.cat(list(fake_features.values()))
    if every.shape[0] < 2:
        raise EmoError("FID needs at least 2 generated images")
    pooled_real = FeatureStats.pool(real[e] for e in fake_features)
    value, how = frechet_to_features(every, pooled_real, cfg.fid_method)
    used.add(how)
    return {
        "value": value,
        "name": "FID", "higher_is_better": False,
        "convention": f"fid-aggregated/inception-2015-12-05-pool3/{cfg.fid_preprocess}-preprocess",
        "definition": f"Fréchet distance between 2048-d FID Inception-v3 pool3 features of the generated images "
                      f"and of the reference ({ref_desc}), preprocessing '{cfg.fid_preprocess}'"
                      + (" (TF1 bilinear resize to 299, (x-128)/128: TF-FID / torch-fidelity / EmoGen)"
                         if cfg.fid_preprocess == "tf" else "")
                      + "; value = FID of the statistics pooled over emotions (EmoGen's aggregated FID, Table 1); "
                        "per_emotion = FID of each emotion against its own reference",
        "trace_sqrt_method": sorted(used),
        "per_emotion": per,
        "mean_per_emotion": float(np.mean(list(per.values()))) if per else None,
        "n_generated": {e: int(f.shape[0]) for e, f in fake_features.items()},
        "n_reference": {e: int(real[e].n) for e in fake_features},
        "notes": notes,
    }


def _emo_a(features: torch.Tensor, labels: list[str], head, head_info: dict, clip: str):
    from emocli.metrics.emotion import emotion_accuracy

    device = head.fc.weight.device
    with torch.no_grad():
        logits = head(features.to(device)).cpu()
    report = emotion_accuracy(logits, labels)
    probs = torch.softmax(logits.double(), 1)
    preds = [(EMOSET.labels[int(i)], float(probs[k, EMOSET.index(lab)]))
             for k, (i, lab) in enumerate(zip(probs.argmax(1).tolist(), labels))]
    per = {e: v for e, v in report["per_emotion"].items() if v is not None}
    return {
        "value": report["accuracy"], "name": "Emo-A", "higher_is_better": True,
        "convention": "emo-a/top1-8class/raw-clip-image-features+linear-head",
        "definition": f"8-class top-1 accuracy of the head {head_info['source']} on raw CLIP ({clip}) "
                      "get_image_features; the label is the emotion folder the image was generated for",
        "per_emotion": per, "polarity_accuracy": report["polarity_accuracy"],
        "mean_true_prob": report["mean_true_prob"], "confusion": report["confusion"], "labels": report["labels"],
        "n": report["n"], "_preds": [p for p, _ in preds],
    }, preds


def _sem_c(features: dict[str, torch.Tensor]) -> dict:
    per_image = {e: f.double().amax(1) for e, f in features.items()}
    every = torch.cat(list(per_image.values()))
    tops = torch.cat(list(features.values())).double()
    return {
        "value": float(every.mean()), "name": "Sem-C", "higher_is_better": True,
        "convention": "sem-c/max(scene-top1-prob,object-top1-prob)/mean-over-all-images",
        "definition": "per image: max(top softmax probability of the Places365 scene ResNet-50, top softmax "
                      "probability of the ImageNet object ResNet-50), after Resize 256 / CenterCrop 224 / ImageNet "
                      "normalisation; value = mean over all images (emotions pooled, as EmoGen)",
        "per_emotion": {e: float(v.mean()) for e, v in per_image.items()},
        "scene_wins": float((tops[:, 0] >= tops[:, 1]).double().mean()),
        "n": int(every.numel()),
    }


ORIGINAL_PAIRS = ("EmoGen's original pair sampling: its script never reset the image list between emotions, so "
                  "emotion k (EmoSet order) drew its {n} random pairs from the images of emotions 1..k together "
                  "(seed {seed}); mean per emotion, then over emotions. Comparable to how Table 1 was sampled, "
                  "not a within-emotion diversity")


def _original_pairs_variant(metric: str, value: float, per_emotion: dict, cfg) -> dict:
    return {"value": value, "per_emotion": per_emotion,
            "name": f"{metric}, EmoGen's cross-emotion pairs",
            "convention": f"{metric.lower()}/emogen-cumulative-cross-emotion-pairs-{cfg.pairs_per_emotion}",
            "definition": ORIGINAL_PAIRS.format(n=cfg.pairs_per_emotion, seed=cfg.pair_seed)}


def _sem_d(features: dict[str, torch.Tensor], cfg, clip: str) -> dict:
    from emocli.metrics.common import cumulative_pairs
    from emocli.metrics.semantic import semantic_diversity

    out = semantic_diversity(features, cfg.pairs_per_emotion, cfg.pair_seed)
    cross = cumulative_pairs({e: f.shape[0] for e, f in features.items()}, cfg.pairs_per_emotion, cfg.pair_seed)
    cross_per = {e: float(np.mean([((features[a[0]][a[1]].double() - features[b[0]][b[1]].double()) ** 2).mean()
                                   .item() for a, b in ps])) for e, ps in cross.items() if ps}
    original = _original_pairs_variant("Sem-D", float(np.mean(list(cross_per.values()))), cross_per, cfg)
    return {
        "original_pairs": original,
        "value": out["sem_d_mse"], "name": "Sem-D", "higher_is_better": True,
        "convention": f"sem-d-mse/raw-clip-image-embeddings/within-emotion-random-pairs-{cfg.pairs_per_emotion}",
        "definition": f"mean over the embedding dimensions of (e_i - e_j)^2 on raw CLIP ({clip}) image embeddings "
                      f"of {cfg.pairs_per_emotion} random distinct pairs within each emotion (seed {cfg.pair_seed}, "
                      "the same pairs as LPIPS); mean per emotion, then over emotions. The MSE variant matches "
                      "Table 1's magnitude (an inference); cosine = 1 - cos, about 10x larger",
        "cosine": out["sem_d_cosine"],
        "per_emotion": {e: v["mse"] for e, v in out["per_emotion"].items()},
        "per_emotion_cosine": {e: v["cosine"] for e, v in out["per_emotion"].items()},
        "pairs": out["pairs"], "skipped_emotions": out["skipped"],
    }


def _clip_i(features: dict[str, torch.Tensor], real: dict, pairing: str, clip: str, ref_desc: str) -> dict:
    per, per_image = {}, {}
    for e, f in features.items():
        g = normalize_rows(f)
        r_mean = torch.as_tensor(real[e].mean)
        if pairing == "all_pairs":
            per[e] = float(g.mean(0) @ r_mean)  # = mean cosine over every (generated, reference) pair
            per_image[e] = (g @ r_mean).numpy()
        else:
            per[e] = float(torch.nn.functional.cosine_similarity(g.mean(0), r_mean, dim=0))
    return {
        "value": float(np.mean(list(per.values()))), "name": "CLIP-I", "higher_is_better": True,
        "convention": f"clip-i/{pairing}/cosine-unscaled/same-emotion-reference",
        "definition": (f"CLIP ({clip}) image-image cosine, unscaled, between each generated image and the "
                       f"reference ({ref_desc}) of its emotion; "
                       + ("mean over all (generated, reference) pairs"
                          if pairing == "all_pairs" else "cosine of the mean generated and mean reference embeddings")
                       + "; value = unweighted mean over emotions"),
        "per_emotion": per,
        **({"_units": per_image} if per_image else {}),
    }


def _clip_t(features: torch.Tensor, texts: list[str], labels: list[str], clip_ex, template: str, clip: str) -> dict:
    from emocli.metrics.clip_scores import clip_t

    unique = list(dict.fromkeys(texts))
    text_features = clip_ex.texts(unique)
    row = {t: i for i, t in enumerate(unique)}
    per_text = text_features[[row[t] for t in texts]]
    overall = clip_t(features, per_text)
    cosines = (normalize_rows(features) * normalize_rows(per_text)).sum(1).numpy()
    per = {}
    for e in dict.fromkeys(labels):
        idx = [i for i, lab in enumerate(labels) if lab == e]
        per[e] = clip_t(features[idx], per_text[idx])["clip_t"]
    return {
        "value": overall["clip_t"], "name": "CLIP-T", "higher_is_better": True,
        "convention": "clip-t/raw-cosine/image-vs-template-text",
        "definition": f"CLIP ({clip}) cosine between each image and its text {template!r} (fields from the "
                      "sample's .json sidecar), unscaled, mean over all images; clipscore = mean(2.5 * max(cos, 0)) "
                      "(Hessel et al.), clip_score_100 = max(100 * mean cos, 0) (torchmetrics)",
        "clipscore": overall["clipscore"], "clip_score_100": overall["clip_score_100"],
        "per_emotion": per, "texts": unique[:16],
        "_units": {e: cosines[[i for i, lab in enumerate(labels) if lab == e]] for e in per},
    }


def _units(results: dict, feats: dict, labels: list[str], cfg) -> dict[str, dict[str, np.ndarray]]:
    """Per-emotion unit values whose mean is each metric (images, or image pairs for LPIPS and Sem-D)."""
    from emocli.metrics.common import within_group_pairs

    units = {}
    for name, m in results.items():
        if "_units" in m:
            units[name] = m.pop("_units")
    if "emo_a" in results:
        preds = results["emo_a"].pop("_preds")
        units["emo_a"] = {e: np.array([float(p == e) for p, lab in zip(preds, labels) if lab == e])
                          for e in dict.fromkeys(labels)}
    if "sem_c" in results:
        units["sem_c"] = {e: f.double().amax(1).numpy() for e, f in feats["sem_c"].items()}
    if "sem_d" in results:
        pairs = within_group_pairs({e: f.shape[0] for e, f in feats["clip"].items()}, cfg.pairs_per_emotion,
                                   cfg.pair_seed)
        units["sem_d"] = {e: np.array([float(((feats["clip"][e][i].double() - feats["clip"][e][j].double()) ** 2)
                                             .mean()) for i, j in ps]) for e, ps in pairs.items() if ps}
        units["_sem_d_pairs"] = pairs
    return units


def _pair_rows(results: dict, units: dict, generated: dict, cfg) -> list[dict]:
    """per_pair.jsonl: one row per within-emotion pair, with its LPIPS and Sem-D (the same pairs)."""
    from emocli.metrics.common import within_group_pairs

    pairs = units.pop("_sem_d_pairs", None) or within_group_pairs(
        {e: len(p) for e, p in generated.items()}, cfg.pairs_per_emotion, cfg.pair_seed)
    rows = []
    for e, ps in pairs.items():
        for k, (i, j) in enumerate(ps):
            row = {"emotion": e, "a": generated[e][i].name, "b": generated[e][j].name}
            for name in ("lpips", "sem_d"):
                if name in units and e in units[name]:
                    row[name] = float(units[name][e][k])
            rows.append(row)
    return rows


POOLING = {"emo_a": "mean_of_units", "sem_c": "mean_of_units", "clip_t": "mean_of_units",
           "clip_i": "mean_of_groups", "lpips": "mean_of_groups", "sem_d": "mean_of_groups"}


def _intervals(results: dict, units: dict, feats: dict, real: dict, cfg) -> None:
    """Adds ``ci`` = {"pooled": [lo, hi], "per_emotion": {...}, "level", "resamples", "method"} to each metric."""
    from emocli.metrics.bootstrap import bootstrap_fid, bootstrap_means

    level, seed = cfg.confidence_level, cfg.bootstrap_seed
    for name, m in results.items():
        if name == "fid":
            if not cfg.bootstrap_fid_resamples:
                continue
            ci = bootstrap_fid({e: f.double().numpy() for e, f in feats["inception"].items()}, real["inception"],
                               cfg.bootstrap_fid_resamples, seed, level)
        elif name in units and cfg.bootstrap_resamples:
            ci = bootstrap_means(units[name], cfg.bootstrap_resamples, seed, level, POOLING[name])
        else:
            continue
        m["ci"] = {"pooled": ci["pooled"], "per_emotion": ci["per_group"], "level": level,
                   "resamples": ci["resamples"], "method": ci["method"]}


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(x).double(), dim=-1)


def main(run: Run, resume: bool = False) -> None:
    """Entry point (`emo eval generation`): evaluate into the run directory. Re-running reuses the caches."""
    from emocli.progress import setup_logging

    setup_logging(run.dir)
    evaluate_generation(run.recipe, run.dir)
