"""`emo eval generation`'s feature stage: extraction throughput, and the shared feature cache vs recomputing
features for every metric.

Three ways to get the features all seven metrics need, for the same images, interleaved round by round:

- shared, cold: one pass, each image decoded once and given to every backbone once (CLIP, FID Inception,
  the two Sem-C ResNets), written to an empty cache (what a first `emo eval generation` run does);
- shared, warm: the same call on the filled cache (a second run: nothing is decoded or computed);
- per metric: what an evaluator without sharing does: every metric decodes the images and runs its own
  backbone (CLIP four times: Emo-A, Sem-D, CLIP-I, CLIP-T; Inception for FID; both ResNets for Sem-C).

Numbers are ratios on tiny random backbones (the FID Inception is full size: its width is fixed), not
claims about real models.

    python benchmarks/eval.py                    # CPU, 8 emotions x 16 images, tiny CLIP
    python benchmarks/eval.py --n 32 --device cuda --with-inception --clip openai/clip-vit-large-patch14
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(root: Path, per_emotion: int, size: int) -> list[Path]:
    from PIL import Image

    from emocli.samples import write_sample
    from emocli.testing.tiny import EMOTIONS

    rng = np.random.default_rng(0)
    paths = []
    for e in EMOTIONS:
        for i in range(per_emotion):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            paths.append(write_sample(root, e, f"{e}_{i:04d}", Image.fromarray(pixels), {"emotion": e}))
    return paths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16, help="images per emotion (8 emotions)")
    parser.add_argument("--clip", default=None, help="CLIP folder or cached Hub id; default: the tiny CLIP")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--with-inception", action="store_true",
                        help="include FID's full-size Inception in the cache comparison (it runs once either way)")
    args = parser.parse_args()

    from emocli.data.emoset import load_rgb
    from emocli.evaluation import backbones as bb
    from emocli.evaluation.cache import FeatureCache, extract_features
    from emocli.evaluation.tiny import make_tiny_metric_weights
    from emocli.testing.tiny import make_tiny

    work = Path(tempfile.mkdtemp(prefix="emo-bench-eval-"))
    device = torch.device(args.device)
    clip_dir = args.clip or str(make_tiny(work / "models", which=("clip",))["clip"])
    w = make_tiny_metric_weights(work / "metrics")
    paths = make_images(work / "samples", args.n, args.size)

    model, processor = bb.load_clip(clip_dir, "models.clip", device)
    inception = bb.load_inception(w["inception"], "models.inception", "tf", device)
    scene = bb.load_resnet(w["scene_classifier"], "models.scene_classifier", "scene", device)
    objects = bb.load_resnet(w["object_classifier"], "models.object_classifier", "object", device)
    every = {"clip": bb.ClipImageExtractor(model, processor, clip_dir, args.batch_size),
             "inception": bb.InceptionExtractor(inception, w["inception"], "tf"),
             "sem_c": bb.SemCExtractor(scene, objects, w["scene_classifier"], w["object_classifier"])}
    # metric -> the backbone it needs (a per-metric evaluator runs each one separately)
    per_metric = {"Emo-A": "clip", "Sem-D": "clip", "CLIP-I": "clip", "CLIP-T": "clip", "Sem-C": "sem_c",
                  "FID": "inception"}
    if not args.with_inception:
        per_metric.pop("FID")
    extractors = {name: every[name] for name in dict.fromkeys(per_metric.values())}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def shared(cache_dir: Path):
        caches = {name: FeatureCache(cache_dir, name, ex.identity) for name, ex in extractors.items()}
        return extract_features(paths, caches, extractors, args.batch_size, description="bench")

    def recompute():
        for backbone in per_metric.values():
            ex = extractors[backbone]
            for s in range(0, len(paths), args.batch_size):
                ex([load_rgb(p) for p in paths[s:s + args.batch_size]])

    # throughput of each backbone alone (images already decoded), and of decoding
    decoded = [load_rgb(p) for p in paths]
    rates = {}
    for name, ex in every.items():
        ex(decoded[:2])  # warm-up
        subset = decoded if name != "inception" or args.with_inception else decoded[:16]
        sync()
        t = time.perf_counter()
        for s in range(0, len(subset), args.batch_size):
            ex(subset[s:s + args.batch_size])
        sync()
        rates[name] = len(subset) / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in paths:
        load_rgb(p)
    rates["decode"] = len(paths) / (time.perf_counter() - t)

    timings = {"shared, cold cache": [], "shared, warm cache": [], "per metric, no cache": []}
    warm_dir = work / "warm"
    shared(warm_dir)  # fill it once
    for r in range(args.rounds):
        cold_dir = work / f"cold-{r}"
        for name, fn in (("shared, cold cache", lambda d=cold_dir: shared(d)),
                         ("shared, warm cache", lambda: shared(warm_dir)),
                         ("per metric, no cache", recompute)):
            sync()
            t = time.perf_counter()
            out = fn()
            sync()
            timings[name].append(time.perf_counter() - t)
            if name == "shared, warm cache":
                assert all(c["computed"] == 0 for c in out.counts.values())
        shutil.rmtree(cold_dir, ignore_errors=True)

    n = len(paths)
    print(f"{n} images ({args.n} per emotion, {args.size}x{args.size} px), device {device}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads, {args.rounds} interleaved rounds (median)")
    print("feature extraction, images/s (decoded images): "
          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items() if k != "decode") + f"; PNG decode {rates['decode']:.0f}")
    print("cache comparison over the backbones of " + ", ".join(per_metric)
          + ("" if args.with_inception else " (FID's Inception left out: it runs once either way; --with-inception)"))
    med = {k: float(np.median(v)) for k, v in timings.items()}
    for name, secs in med.items():
        print(f"  {name:22s} {secs:8.3f} s   {n / secs:9.1f} images/s (all metrics' features)")
    passes = {"shared": len(extractors), "per metric": len(per_metric)}
    print(f"backbone passes over each image: {passes['shared']} shared ({', '.join(extractors)}) vs "
          f"{passes['per metric']} per metric (CLIP once for each of Emo-A, Sem-D, CLIP-I, CLIP-T)")
    base = med["per metric, no cache"]
    print(f"speedup of the shared feature cache over recomputing per metric: "
          f"{base / med['shared, cold cache']:.2f}x on a first run, {base / med['shared, warm cache']:.0f}x on a re-run")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
