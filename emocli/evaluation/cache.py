"""Per-image features, extracted once per backbone, in batches, cached on disk and shared by every metric.

A `FeatureCache` holds the features one backbone gave for a set of image files:

    DIR/<backbone>-<digest>.safetensors   "features": (N, D) float32, one row per image
    DIR/<backbone>-<digest>.json          {"identity": ..., "keys": [image key per row], "unreadable": [...]}

`digest` hashes the backbone's identity (its weights file or Hub id, its preprocessing), so another model
never reads these rows. An image key is ``"<absolute path>|<mtime_ns>|<size>"``: a file that is rewritten
gets new features, an untouched one is never recomputed.

`extract_features` makes one pass over the images that any cache lacks: every batch is decoded once and fed
to each backbone that needs it. It returns the features of every image (cached or new) in the order asked
and counts, per backbone, how many rows came from the cache and how many were computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emocli.errors import EmoError
from emocli.written import publish

log = logging.getLogger("emocli")

CACHE_FORMAT = "emocli.FeatureCache/1"


def image_key(path) -> str:
    """``"<absolute path>|<mtime_ns>|<size>"``: identifies one version of one image file."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        raise EmoError(f"image {str(p)!r} does not exist") from None
    return f"{p}|{st.st_mtime_ns}|{st.st_size}"


def file_identity(path) -> dict:
    """A weights file or folder as a cache identity: absolute path, size and mtime (of its newest file)."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        return {"id": str(path)}  # a Hub id
    p = p.resolve()
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return {"path": str(p), "size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def digest(obj, n: int = 12) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:n]


def _write_atomic_bytes(path: Path, writer: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer(tmp)
    publish(tmp, path)


class FeatureCache:
    """The features of one backbone for many image files (see the module docstring)."""

    def __init__(self, directory, name: str, identity: Mapping):
        self.directory = Path(directory)
        self.name = name
        self.identity = dict(identity)
        stem = f"{name}-{digest(self.identity)}"
        self.path = self.directory / f"{stem}.safetensors"
        self.index_path = self.directory / f"{stem}.json"
        self._rows: dict[str, int] = {}
        self._chunks: list[torch.Tensor] = []
        self._features: torch.Tensor | None = None
        self.unreadable: dict[str, str] = {}
        self._dirty = False
        self._load()

    def __len__(self) -> int:
        return len(self._rows)

    def _load(self) -> None:
        if not (self.path.is_file() and self.index_path.is_file()):
            return
        try:
            from safetensors.torch import load_file

            index = json.loads(self.index_path.read_text())
            features = load_file(str(self.path))["features"]
            keys = list(index["keys"])
            if index.get("format") != CACHE_FORMAT or features.shape[0] != len(keys):
                raise ValueError("index and features disagree")
        except Exception as e:  # a broken cache is rebuilt, never trusted
            log.warning("feature cache %s is unreadable (%s); recomputing", self.path, e)
            return
        self._rows = {k: i for i, k in enumerate(keys)}
        self._features = features.float()
        self.unreadable = dict(index.get("unreadable", {}))

    def has(self, key: str) -> bool:
        return key in self._rows or key in self.unreadable

    def missing(self, keys: Sequence[str]) -> list[str]:
        seen, out = set(), []
        for k in keys:
            if not self.has(k) and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def _materialise(self) -> torch.Tensor | None:
        if self._chunks:
            parts = ([self._features] if self._features is not None else []) + self._chunks
            self._features = torch.cat(parts)
            self._chunks = []
        return self._features

    def add(self, keys: Sequence[str], features: torch.Tensor) -> None:
        features = torch.as_tensor(features).detach().to("cpu", torch.float32)
        if features.ndim == 1:
            features = features[:, None]
        if features.shape[0] != len(keys):
            raise EmoError(f"{self.name}: {features.shape[0]} feature rows for {len(keys)} images")
        current = self._features.shape[0] if self._features is not None else 0
        current += sum(c.shape[0] for c in self._chunks)
        for i, k in enumerate(keys):
            self._rows[k] = current + i
        self._chunks.append(features)
        self._dirty = True

    def mark_unreadable(self, key: str, reason: str) -> None:
        self.unreadable[key] = reason
        self._dirty = True

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """(len(keys), D) features in the order of `keys` (every key must be cached and readable)."""
        features = self._materialise()
        missing = [k for k in keys if k not in self._rows]
        if missing:
            raise EmoError(f"{self.name} features missing for {missing[0].split('|')[0]}")
        if features is None:
            return torch.zeros(0, 0)
        return features[[self._rows[k] for k in keys]]

    def save(self) -> None:
        if not self._dirty:
            return
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        features = self._materialise()
        keys = [None] * len(self._rows)
        for k, i in self._rows.items():
            keys[i] = k
        if features is None:
            features = torch.zeros(0, 1)
        _write_atomic_bytes(self.path, lambda p: save_file({"features": features.contiguous()}, str(p)))
        index = {"format": CACHE_FORMAT, "backbone": self.name, "identity": self.identity, "keys": keys,
                 "unreadable": self.unreadable}
        _write_atomic_bytes(self.index_path, lambda p: p.write_text(json.dumps(index)))
        self._dirty = False


@dataclass
class Extraction:
    """What `extract_features` returns: `features[name]` has one row per kept image, `kept` indexes the
    images asked for (unreadable ones are dropped when skipping), `counts[name]` = {"cached", "computed"}."""

    features: dict[str, torch.Tensor]
    kept: list[int]
    unreadable: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def extract_features(paths: Sequence, caches: Mapping[str, FeatureCache], extractors: Mapping[str, Callable],
                     batch_size: int = 32, skip_unreadable: bool = False, description: str = "features",
                     loader: Callable | None = None) -> Extraction:
    """Features of `paths` for every backbone in `caches`, computing only what the caches lack.

    `extractors[name](images)` maps a list of RGB PIL images to a (B, D) tensor; it is called only when
    something is missing (so a fully cached run never loads the model if extractors load lazily).
    Each batch of images is decoded once, for all backbones. An unreadable image raises EmoError, or with
    `skip_unreadable` is logged, remembered in the caches and left out of the result.
    """
    from emocli.data.emoset import CorruptImage, load_rgb
    from emocli.progress import track

    load = loader or load_rgb
    keys = [image_key(p) for p in paths]
    need = {name: set(cache.missing(keys)) for name, cache in caches.items()}
    first: dict[str, int] = {}  # one image per distinct key
    for i, k in enumerate(keys):
        if k not in first and any(k in need[n] for n in caches):
            first[k] = i
    todo = sorted(first.values())
    counts = {name: {"cached": len(set(keys)) - len(need[name]), "computed": 0} for name in caches}
    batches = [todo[s:s + max(1, int(batch_size))] for s in range(0, len(todo), max(1, int(batch_size)))]
    for batch in track(batches, description=f"{description} ({len(todo)} images)", every=max(1, len(batches) // 10),
                       enabled=bool(batches)):
        images, good = [], []
        for i in batch:
            try:
                images.append(load(paths[i]))
                good.append(i)
            except CorruptImage as e:
                if not skip_unreadable:
                    raise EmoError(f"unreadable image {e.path}: {e.reason}") from None
                log.warning("skipping unreadable image %s (%s)", e.path, e.reason)
                for cache in caches.values():
                    cache.mark_unreadable(keys[i], e.reason)
        for name, cache in caches.items():
            sel = [j for j, i in enumerate(good) if keys[i] in need[name]]
            if not sel:
                continue
            out = extractors[name]([images[j] for j in sel])
            cache.add([keys[good[j]] for j in sel], out)
            counts[name]["computed"] += len(sel)
    for cache in caches.values():
        cache.save()
    unreadable = {}
    for cache in caches.values():
        unreadable.update(cache.unreadable)
    kept = [i for i, k in enumerate(keys) if k not in unreadable]
    kept_keys = [keys[i] for i in kept]
    features = {name: cache.get(kept_keys) for name, cache in caches.items()}
    bad_here = {keys[i].split("|")[0]: unreadable[keys[i]] for i in range(len(keys)) if keys[i] in unreadable}
    for name, c in counts.items():
        log.info("features %s: %d cached, %d computed", name, c["cached"], c["computed"])
    return Extraction(features=features, kept=kept, unreadable=bad_here, counts=counts)
