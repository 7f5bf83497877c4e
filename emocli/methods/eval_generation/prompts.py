"""`emo eval generation` on the prompt-conditioned layout (`emo sample --run LDM_RUN --prompts PREPARED`):
FID against the test images of a prepared caption folder, CLIP-I (matched and all-pairs) and CLIP-T.

    SAMPLES/prompts/<name>.png + .json (prompt, seed, reference_id)   the generated images
    data.prepared = a caption folder (`emo data prepare captions`)    its test split: the real images

Conventions (named in metrics.json and the report):
- FID: 2048-d FID Inception-v3 pool3 features, `metrics.fid_preprocess`; generated images vs every image of
  the reference split (one set each, no per-class pooling).
- CLIP-I matched: cosine (unscaled) between each generated image and the real image whose id its sidecar
  names (`reference_id`), mean over the generated images that have one.
- CLIP-I all-pairs: mean cosine over every (generated, real) pair (the Textual Inversion / DreamBooth
  evaluation code's convention).
- CLIP-T: cosine (unscaled) between each image and its own prompt, mean over images; CLIPScore
  (2.5 * max(cos, 0)) and torchmetrics' 100 * cos reported beside it.
Emotion metrics (Emo-A, Sem-C, Sem-D, LPIPS-per-emotion) have no meaning here and are not computed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from emocli.errors import EmoError

log = logging.getLogger("emocli")

RESULT_FORMAT = "emocli.eval-generation-prompts/1"
PROMPT_METRICS = ("fid", "clip_i", "clip_t")
# Seed 004's reported numbers (1,063 test prompts); its FID implementation, CLIP backbone and pairings are not
# stated, so they compare with ours only loosely.
SEED_004 = {"fid": 82.6531, "clip_i_matched": 0.800509, "clip_t": 0.291647}


def is_prompt_layout(samples) -> bool:
    return (Path(samples).expanduser() / "prompts").is_dir()


def evaluate_prompt_layout(recipe, out_dir) -> dict:
    from emocli.data.captions import PreparedCaptions
    from emocli.evaluation import backbones as bb
    from emocli.evaluation.cache import FeatureCache, extract_features
    from emocli.methods.eval_generation.evaluate import frechet_to_features
    from emocli.metrics.clip_scores import clip_i, clip_t
    from emocli.metrics.fid import FeatureStats
    from emocli.samples import read_prompt_samples

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data, models, cfg = recipe.data, recipe.models, recipe.metrics
    samples = read_prompt_samples(data.samples)
    if not samples:
        raise EmoError(f"{data.samples}/prompts holds no images (recipe key data.samples); write them with "
                       f"`emo sample --run LDM_RUN --prompts PREPARED --out ...`")
    if data.max_samples_per_emotion:
        samples = samples[: data.max_samples_per_emotion]
    split = "train" if data.reference_split == "train" else "test"
    reference = PreparedCaptions(data.prepared).records(split)
    if data.max_reference_per_emotion:
        reference = reference[: data.max_reference_per_emotion]
    requested = list(PROMPT_METRICS) if cfg.compute == "auto" else list(cfg.compute)
    foreign = [m for m in requested if m not in PROMPT_METRICS]
    if foreign:
        raise EmoError(f"metrics.compute {foreign} need emotion folders; on prompt samples only "
                       f"{', '.join(PROMPT_METRICS)} apply")
    skipped = {}
    plan = []
    for name, key in (("fid", "inception"), ("clip_i", "clip"), ("clip_t", "clip")):
        if name not in requested:
            continue
        if getattr(models, key) in (None, ""):
            if cfg.compute != "auto":
                raise EmoError(f"{name} is requested (metrics.compute) but models.{key} is not set")
            skipped[name] = f"not computed: models.{key} not set"
            continue
        plan.append(name)
    if not plan:
        raise EmoError("no metric can run on prompt samples: set models.clip and/or models.inception")

    device = bb.resolve_device(models.device)
    extractors = {}
    if {"clip_i", "clip_t"} & set(plan):
        model, processor = bb.load_clip(models.clip, "models.clip", device)
        extractors["clip"] = bb.ClipImageExtractor(model, processor, models.clip, cfg.batch_size)
    if "fid" in plan:
        bb.require_path(models.inception, "models.inception", "FID Inception-v3 weights file")
        inception = bb.load_inception(models.inception, "models.inception", cfg.fid_preprocess, device)
        extractors["inception"] = bb.InceptionExtractor(inception, models.inception, cfg.fid_preprocess)
    feature_dir = Path(data.feature_cache).expanduser() if data.feature_cache else out_dir / "cache"
    caches = {name: FeatureCache(feature_dir, name, ex.identity) for name, ex in extractors.items()}
    generated = extract_features([p for p, _ in samples], caches, extractors, cfg.batch_size,
                                 description="generated images").features
    caches = {name: FeatureCache(feature_dir, name, ex.identity) for name, ex in extractors.items()}
    real_run = extract_features([r["image"] for r in reference], caches, extractors, cfg.batch_size,
                                skip_unreadable=True, description="reference images")
    real = real_run.features
    kept = [reference[i] for i in real_run.kept]

    results: dict[str, dict] = {}
    ref_desc = f"the {split} split of {Path(data.prepared).name} ({len(kept)} images)"
    if "fid" in plan:
        if len(samples) < 2 or len(kept) < 2:
            raise EmoError("FID needs at least 2 generated and 2 reference images")
        value, how = frechet_to_features(generated["inception"], FeatureStats.from_features(
            real["inception"].double().numpy()), cfg.fid_method)
        results["fid"] = {"value": value, "name": "FID", "higher_is_better": False,
                          "convention": f"fid/inception-2015-12-05-pool3/{cfg.fid_preprocess}-preprocess/one-set",
                          "definition": f"Fréchet distance between FID Inception-v3 pool3 features of all generated "
                                        f"images and of {ref_desc}", "trace_sqrt_method": how,
                          "n_generated": len(samples), "n_reference": len(kept)}
    if "clip_i" in plan:
        row_of = {r["id"]: i for i, r in enumerate(kept)}
        pairs = [(g, row_of[s.get("reference_id")]) for g, (_, s) in enumerate(samples) if s.get("reference_id")
                 in row_of]
        all_pairs = clip_i(generated["clip"], real["clip"], "all_pairs")["clip_i"]
        matched = None
        if pairs:
            gi, ri = zip(*pairs)
            matched = clip_i(generated["clip"][list(gi)], real["clip"][list(ri)], "matched")["clip_i"]
        results["clip_i"] = {"value": matched if matched is not None else all_pairs, "name": "CLIP-I",
                             "higher_is_better": True, "matched": matched, "all_pairs": all_pairs,
                             "n_matched": len(pairs), "n_generated": len(samples),
                             "convention": f"clip-i/{'matched' if matched is not None else 'all_pairs'}/"
                                           f"cosine-unscaled",
                             "definition": f"CLIP ({models.clip}) image-image cosine, unscaled. matched: each generated "
                                           f"image vs the real image its sidecar's reference_id names ({len(pairs)} "
                                           f"of {len(samples)} images have one); all_pairs: mean over every "
                                           f"(generated, real) pair with {ref_desc}. value = matched when "
                                           f"available, else all_pairs"}
    if "clip_t" in plan:
        prompts = [str(s.get("prompt", "")) for _, s in samples]
        texts = extractors["clip"].texts(list(dict.fromkeys(prompts)))
        index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        out = clip_t(generated["clip"], texts[[index[p] for p in prompts]])
        results["clip_t"] = {"value": out["clip_t"], "name": "CLIP-T", "higher_is_better": True,
                             "clipscore": out["clipscore"], "clip_score_100": out["clip_score_100"],
                             "convention": "clip-t/raw-cosine/image-vs-own-prompt",
                             "definition": f"CLIP ({models.clip}) cosine between each image and its own prompt (the "
                                           f"sidecar's), unscaled, mean over images; clipscore = mean(2.5 * max(cos, "
                                           f"0)), clip_score_100 = max(100 * mean cos, 0)"}

    table = {"FID": results.get("fid", {}).get("value"), "CLIP-I": results.get("clip_i", {}).get("value"),
             "CLIP-T": results.get("clip_t", {}).get("value")}
    result = {
        "format": RESULT_FORMAT, "layout": "prompts", "name": recipe.run.name or out_dir.name,
        "run": str(out_dir.resolve()), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "samples": str(Path(data.samples).expanduser().resolve()),
        "prepared": str(Path(data.prepared).expanduser().resolve()), "reference_split": split,
        "counts": {"generated": len(samples), "reference": len(kept), "unreadable_reference": real_run.unreadable},
        "table": {k: v for k, v in table.items() if v is not None}, "metrics": results, "skipped": skipped,
        "reference_rows": {"seed 004 (reported; conventions unknown)": SEED_004},
        "models": {k: v for k, v in models.model_dump().items() if v is not None},
        "seconds": {"total": round(time.perf_counter() - t0, 3)},
    }
    _write_report(result, out_dir, recipe.report, samples)
    log.info("metrics: %s", ", ".join(f"{k} {v:.4g}" for k, v in result["table"].items()))
    return result


def _write_report(result: dict, out_dir: Path, report_cfg, samples) -> None:
    from emocli.evaluation.report import Column, Image, Report, Row

    m = result["metrics"]
    report = Report(f"emo eval generation (prompts): {result['name']}", facts={
        "samples": f"{result['samples']} ({result['counts']['generated']} images)",
        "reference": f"{result['prepared']}, {result['reference_split']} split ({result['counts']['reference']} "
                     f"images)"})
    table = report.table("Results", [Column("fid", "FID", False, 2), Column("clip_i_matched", "CLIP-I matched", True),
                                     Column("clip_i_all", "CLIP-I all-pairs", True), Column("clip_t", "CLIP-T", True)])
    ours = {"fid": m.get("fid", {}).get("value"), "clip_i_matched": m.get("clip_i", {}).get("matched"),
            "clip_i_all": m.get("clip_i", {}).get("all_pairs"), "clip_t": m.get("clip_t", {}).get("value")}
    table.add(Row(f"{result['name']} (this run)", ours, highlight=True))
    if report_cfg.paper_rows:
        table.add(Row("seed 004 (reported)", SEED_004, reference=True,
                      note="conventions unknown: FID implementation, CLIP backbone and pairing not stated; "
                           "1,063 test prompts"))
    report.section("Conventions", bullets=[f"**{v['name']}** `{v['convention']}`: {v['definition']}"
                                           for v in m.values()] + [f"{k}: {v}" for k, v in result["skipped"].items()])
    shown = samples[: max(0, report_cfg.images_per_emotion) * 4]
    if shown:
        report.gallery("Samples", {"prompts": [Image(p, str(s.get("prompt", p.stem))[:60]) for p, s in shown]})
    report.write(out_dir, metrics=result, embed_images=report_cfg.embed_images, html=report_cfg.html)
