"""Reference images of a prepared EmoSet and their per-emotion statistics, computed once and cached.

Reference set (EmoGen): for each emotion, every image of that emotion in EmoSet (``reference_split: all``),
or only those of one split. `reference_images` reads ``records.jsonl`` of a prepared folder (or the split
files of an EmoSet release folder).

Statistics (`FeatureStats`: count, float64 mean and covariance) are kept per backbone and emotion:

- ``inception``: FID pool features (FID's real statistics; EmoGen cached them as ``<label>_fid_2048.npz``);
- ``clip``: L2-normalised CLIP image embeddings (their mean gives CLIP-I against the whole reference set).

They are cached as ``ROOT/<backbone>-<identity digest>/<emotion>-<fingerprint>.npz``, where ROOT defaults to
``PREPARED/eval-cache`` and the fingerprint hashes the emotion's reference image keys (path, mtime, size):
adding, removing or rewriting a reference image recomputes that emotion only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.evaluation.cache import digest, image_key
from emocli.written import publish

log = logging.getLogger("emocli")


def read_records(prepared) -> list[dict]:
    """Canonical records of a prepared EmoSet (``records.jsonl``; `emo data prepare emoset` writes it)."""
    root = Path(str(prepared)).expanduser()
    if not root.is_dir():
        raise EmoError(f"prepared EmoSet folder {str(root)!r} does not exist (recipe key data.prepared)")
    records_file = root / "records.jsonl"
    if records_file.is_file():
        out = []
        for n, line in enumerate(records_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise EmoError(f"{records_file}:{n} is not valid JSON") from None
            if not all(k in rec for k in ("image", "emotion")):
                raise EmoError(f"{records_file}:{n} has no image/emotion fields")
            out.append(rec)
        return out
    if (root / "info.json").is_file() and (root / "train.json").is_file():
        raise EmoError(f"{root} is an EmoSet release folder; prepare it first (`emo data prepare emoset --source "
                       f"{root} --out DIR`) and set data.prepared=DIR")
    raise EmoError(f"{root} is not a prepared EmoSet folder (no records.jsonl; make one with `emo data prepare "
                   f"emoset`) (recipe key data.prepared)")


def reference_images(prepared, split: str = "all", emotions=None, cap: int | None = None) -> dict[str, list[str]]:
    """{emotion: [image paths]} in record order; `split` "all" keeps every split (EmoGen's reference)."""
    wanted = list(EMOSET.labels) if emotions is None else [EMOSET.validate(e) for e in emotions]
    out: dict[str, list[str]] = {e: [] for e in wanted}
    for rec in read_records(prepared):
        if split != "all" and rec.get("split") != split:
            continue
        emotion = rec["emotion"]
        if emotion in out and (cap is None or len(out[emotion]) < cap):
            out[emotion].append(str(rec["image"]))
    empty = [e for e, paths in out.items() if not paths]
    if empty:
        raise EmoError(f"{prepared}: no reference images of {', '.join(empty)} in split {split!r} "
                       f"(recipe keys data.prepared, data.reference_split)")
    return out


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def stats_root(prepared, configured: str | None, fallback: Path) -> Path:
    """Where reference statistics live: `configured`, else PREPARED/eval-cache, else `fallback` (read-only data)."""
    if configured:
        root = Path(configured).expanduser()
        if not _writable(root):
            raise EmoError(f"cannot write reference statistics to {root} (recipe key data.reference_cache)")
        return root
    root = Path(str(prepared)).expanduser() / "eval-cache"
    if _writable(root):
        return root
    log.warning("%s is not writable; reference statistics go to %s", root, fallback)
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def reference_stats(images_by_emotion: Mapping[str, list[str]], extractors: Mapping[str, object], root: Path,
                    batch_size: int = 32, transform: Mapping[str, Callable] | None = None) -> tuple[dict, dict]:
    """Per-backbone, per-emotion `FeatureStats` of the reference images, from the cache or computed.

    `extractors[name]` has `.identity`, `.dim` and maps PIL images to features; `transform[name]` optionally
    maps the features before the statistics (CLIP: L2-normalise). Computation is one pass over the images of
    every emotion that some backbone lacks; each batch is decoded once for all backbones. Unreadable reference
    images are skipped with a warning. Returns (stats[name][emotion], status) where status says, per
    backbone, which emotions were cached / computed, the image counts and the cache folder.
    """
    from emocli.data.emoset import CorruptImage, load_rgb
    from emocli.metrics.fid import FeatureStats
    from emocli.progress import track

    transform = transform or {}
    stats: dict[str, dict] = {name: {} for name in extractors}
    status = {name: {"cached": [], "computed": [], "unreadable": 0,
                     "dir": str(root / f"{name}-{digest(ex.identity)}")} for name, ex in extractors.items()}
    for emotion, paths in images_by_emotion.items():
        keys, good_paths = [], []
        for p in paths:
            try:
                keys.append(image_key(p))
                good_paths.append(p)
            except EmoError:
                log.warning("reference image %s is missing; skipped", p)
        fingerprint = digest(sorted(keys), 16)
        need = []
        for name in extractors:
            file = Path(status[name]["dir"]) / f"{emotion}-{fingerprint}.npz"
            if file.is_file():
                stats[name][emotion] = FeatureStats.load(file)
                status[name]["cached"].append(emotion)
            else:
                need.append(name)
        if not need:
            continue
        acc = {name: FeatureStats(extractors[name].dim) for name in need}
        unreadable = 0
        step = max(1, int(batch_size))
        batches = [good_paths[s:s + step] for s in range(0, len(good_paths), step)]
        for batch in track(batches, description=f"reference {emotion} ({len(good_paths)} images, {', '.join(need)})",
                           every=max(1, len(batches) // 5)):
            images = []
            for p in batch:
                try:
                    images.append(load_rgb(p))
                except CorruptImage as e:
                    unreadable += 1
                    log.warning("skipping unreadable reference image %s (%s)", e.path, e.reason)
            if not images:
                continue
            for name in need:
                feats = extractors[name](images)
                if name in transform:
                    feats = transform[name](feats)
                acc[name].update(feats)
        for name in need:
            if not acc[name].n:
                raise EmoError(f"no readable reference image of {emotion}")
            directory = Path(status[name]["dir"])
            directory.mkdir(parents=True, exist_ok=True)
            tmp = acc[name].save(directory / f".{emotion}-{fingerprint}.{os.getpid()}.tmp.npz")
            publish(tmp, directory / f"{emotion}-{fingerprint}.npz")
            (directory / "identity.json").write_text(json.dumps(extractors[name].identity, indent=2, default=str))
            stats[name][emotion] = acc[name]
            status[name]["computed"].append(emotion)
            status[name]["unreadable"] += unreadable
    for name, st in status.items():
        st["images"] = {e: int(stats[name][e].n) for e in stats[name]}
        log.info("reference statistics %s: %d emotions cached, %d computed (%s)", name, len(st["cached"]),
                 len(st["computed"]), st["dir"])
    return stats, status


def normalise(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.double(), dim=-1)
