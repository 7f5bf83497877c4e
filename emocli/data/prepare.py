"""`emo data prepare emoset`: EmoSet -> a prepared folder for EmoGen-style training.

A prepared folder (format "emo-prepared-emoset/1"; every file is described in docs/data.md):

    prepare.json            the manifest: source, seed, counts, bad images, missing fields, version
    records.jsonl           canonical records of the readable images (absolute image paths)
    attributes.jsonl        each image's primary attribute (scene if annotated, else its first object)
    attribute_counts.json   per property and attribute: image counts per emotion (training split)
    attribute_vocab.json    per-emotion attribute lists and their union (the attribute-loss vocabulary)
    balanced/scene.json     image ids, every emotion oversampled to the largest (EmoGen's dataset_balance)
    balanced/object.json
    images/<emotion>/<id>.jpg   only for sources that embed images (parquet, Hub, `datasets` folders): the
                                original bytes (.jpg/.png/.webp); decoded images re-encoded as JPEG

Sources: an official release folder (`EmoSetRelease`), a local parquet / JSONL file or a folder of
them, a folder written by `datasets`' `save_to_disk`, or a Hub dataset id. Everything is written
into a temporary folder next to OUT and renamed at the end, so a failure leaves nothing behind.
No model weights are needed. `alpha.py` adds alpha.json / emotion_scores.jsonl to such a folder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from emocli.emotions import EMOSET
from emocli.errors import EmoError, close_matches, io_failed

log = logging.getLogger("emocli")

FORMAT = "emo-prepared-emoset/1"
MANIFEST = "prepare.json"
PROPERTIES = ("scene", "object")
RECORD_FIELDS = ("id", "emotion", "label", "image", "split", "scene", "objects", "facial_expression",
                 "human_action", "brightness", "colorfulness")
OPTIONAL_FIELDS = ("scene", "objects", "facial_expression", "human_action", "brightness", "colorfulness")
REQUIRED_FIELDS = ("image", "emotion")
# canonical field -> accepted column names of a parquet / JSONL / Hub source (case-insensitive, first wins)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "image_path", "file_name", "filename", "path"),
    "emotion": ("emotion", "label", "labels", "emotion_label"),
    "id": ("id", "image_id", "img_id"),
    "split": ("split",),
    "scene": ("scene",),
    "objects": ("objects", "object"),
    "facial_expression": ("facial_expression",),
    "human_action": ("human_action",),
    "brightness": ("brightness",),
    "colorfulness": ("colorfulness",),
}
SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "training": "train", "testing": "test"}
SPLIT_ORDER = ("train", "val", "test")
TABLE_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".ndjson": "json"}
JPEG_QUALITY = 95
VOCAB_RULE = ("an attribute enters the list of the emotion that is most frequent among its training images "
              "(primary attribute; ties -> lowest EmoSet index) if it has at least {n} training images; "
              "each list is ordered by that emotion's image count (descending), then by name")
MAX_NAMED_WARNINGS = 20


# --- attribute rules (shared with alpha.py) ---------------------------------------------------------

def normalise_attribute(name: str) -> str:
    """EmoGen's attribute-name rule: lower case, spaces -> underscores ("Baked goods" -> "baked_goods")."""
    return str(name).lower().replace(" ", "_")


def primary_attribute(record: dict) -> tuple[str, str] | None:
    """(property, normalised attribute): the scene when annotated, else the first object; None if neither."""
    scene = record.get("scene")
    if isinstance(scene, str) and scene:
        return "scene", normalise_attribute(scene)
    objects = [o for o in (record.get("objects") or []) if isinstance(o, str) and o]
    if objects:
        return "object", normalise_attribute(objects[0])
    return None


def attribute_row(record: dict) -> dict | None:
    """The attributes.jsonl row of a canonical record, or None when it has no primary attribute."""
    primary = primary_attribute(record)
    if primary is None:
        return None
    scene = record.get("scene") if isinstance(record.get("scene"), str) and record.get("scene") else None
    objects = [o for o in (record.get("objects") or []) if isinstance(o, str) and o]
    return {
        "id": record["id"], "emotion": record["emotion"], "label": int(record["label"]),
        "split": record["split"], "property": primary[0], "attribute": primary[1],
        "scene": normalise_attribute(scene) if scene else None,
        "object": normalise_attribute(objects[0]) if objects else None,
    }


def count_attributes(rows: Iterable[dict]) -> dict[str, dict[str, list[int]]]:
    """{"scene": {attr: [8 counts, EmoSet order]}, "object": {...}} over `rows` (attribute rows); keys sorted."""
    counts: dict[str, dict[str, list[int]]] = {p: {} for p in PROPERTIES}
    for row in rows:
        per = counts[row["property"]].setdefault(row["attribute"], [0] * len(EMOSET))
        per[int(row["label"])] += 1
    return {p: dict(sorted(table.items())) for p, table in counts.items()}


def balance(rows: Iterable[dict], prop: str, seed: int) -> list[str]:
    """EmoGen's dataset_balance for one property: ids of `rows` whose primary property is `prop`.

    Ids are grouped by emotion (sorted within each emotion, so the source order does not matter);
    every emotion with n > 0 images is oversampled to the size M of the largest one by a seeded
    random permutation p of its n ids read with modulo wraparound (ids[p[k % n]] for k < M, so each
    image appears floor(M/n) or ceil(M/n) times); the concatenation is then shuffled with the same
    generator. Emotions without images stay absent. Deterministic in (rows, prop, seed).
    """
    groups: list[list[str]] = [[] for _ in EMOSET.labels]
    for row in rows:
        if row["property"] == prop:
            groups[int(row["label"])].append(row["id"])
    largest = max((len(g) for g in groups), default=0)
    if largest == 0:
        return []
    rng = np.random.default_rng([int(seed), PROPERTIES.index(prop)])
    out: list[str] = []
    for ids in groups:
        if not ids:
            continue
        ids = sorted(ids)
        perm = rng.permutation(len(ids))
        out.extend(ids[int(perm[k % len(ids)])] for k in range(largest))
    order = rng.permutation(len(out))
    return [out[int(i)] for i in order]


def attribute_vocab(counts: dict[str, dict[str, list[int]]], min_images: int) -> dict:
    """attribute_vocab.json: per-emotion lists by the documented rule (see VOCAB_RULE), and their union."""
    per_emotion: dict[str, dict[str, list[str]]] = {}
    for prop in PROPERTIES:
        lists: dict[str, list[tuple[int, str]]] = {e: [] for e in EMOSET.labels}
        for attr, per in counts.get(prop, {}).items():
            if sum(per) < min_images or sum(per) == 0:
                continue
            best = int(np.argmax(per))  # the first maximum: ties -> lowest index
            lists[EMOSET.labels[best]].append((per[best], attr))
        per_emotion[prop] = {e: [a for _, a in sorted(items, key=lambda t: (-t[0], t[1]))]
                             for e, items in lists.items()}
    vocabulary = sorted({a for prop in per_emotion.values() for items in prop.values() for a in items})
    return {"rule": VOCAB_RULE.format(n=min_images), "per_emotion": per_emotion, "vocabulary": vocabulary}


# --- reading a prepared folder ---------------------------------------------------------------------

class PreparedEmoSet:
    """A prepared folder: `.manifest` (prepare.json), `.records()`, `.attributes()`, `.training_rows()`."""

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise EmoError(f"{self.path} is not a prepared EmoSet folder: it does not exist "
                           f"(make one with `emo data prepare emoset --source ... --out ...`)")
        if not manifest.is_file():
            raise EmoError(f"{self.path} is not a prepared EmoSet folder: no {MANIFEST} "
                           f"(make one with `emo data prepare emoset --source ... --out ...`)")
        try:
            self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EmoError(f"cannot read {manifest}: {e}") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise EmoError(f"{manifest} is not an {FORMAT} manifest")

    @property
    def seed(self) -> int:
        return int(self.manifest.get("seed", 0))

    @property
    def attribute_splits(self) -> list[str]:
        return list(self.manifest.get("attribute_splits") or ["train"])

    def _jsonl(self, name: str) -> list[dict]:
        path = self.path / name
        try:
            with path.open(encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            raise EmoError(f"{self.path} lacks {name}; prepare it again") from None
        except (OSError, ValueError) as e:
            raise EmoError(f"cannot read {path}: {e}") from None

    def records(self) -> list[dict]:
        return self._jsonl("records.jsonl")

    def attributes(self) -> list[dict]:
        return self._jsonl("attributes.jsonl")

    def training_rows(self) -> list[dict]:
        """Attribute rows of the split(s) the counts, balanced lists and vocabulary are built from."""
        splits = set(self.attribute_splits)
        return [r for r in self.attributes() if r["split"] in splits]


# --- sources ---------------------------------------------------------------------------------------

def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not text.startswith(".")


def _canonical_split(name: str) -> str:
    name = str(name)
    return SPLIT_ALIASES.get(name.lower(), name)


def _split_sort_key(name: str):
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


class _Source:
    """Base: `kind`, `name`, `splits`, `missing_fields`, `info` (extra manifest keys) and `produce`."""

    kind = ""
    name = ""
    splits: tuple[str, ...] = ()
    missing_fields: list[str] = []

    def info(self) -> dict:
        return {}

    def produce(self, split: str, stage: Path, final: Path, workers: int,
                keep: set[str] | None = None) -> Iterator[tuple[dict | None, tuple]]:
        """(record, ()) for a good image, (None, (path, reason)) for a bad one, in source order."""
        raise NotImplementedError


class _ReleaseSource(_Source):
    kind = "emoset-release"

    def __init__(self, root: Path):
        from emocli.data.emoset import EmoSetRelease

        self.release = EmoSetRelease(root)
        self.name = str(self.release.root)
        self.splits = self.release.splits
        self.missing_fields = []

    def info(self) -> dict:
        return {"missing_annotations": len(self.release.missing_annotations),
                "bad_annotations": len(self.release.bad_annotations),
                "missing_annotation_files": self.release.missing_annotations,
                "bad_annotation_files": self.release.bad_annotations}

    def count(self, split: str) -> int:
        return len(self.release.records(split, annotations=False))

    def produce(self, split, stage, final, workers, keep=None):
        from emocli.data.emoset import CorruptImage, load_rgb

        def check(record: dict):
            try:
                load_rgb(record["image"])
            except CorruptImage as e:
                return None, (e.path, e.reason)
            return record, ()

        yield from _ordered_map(check, self.release.records(split), workers)


class _TableSource(_Source):
    """Parquet / JSONL exports, `datasets` saved folders and Hub datasets: rows -> canonical records."""

    def __init__(self, kind: str, name: str, datasets_by_split: dict, base_dir: Path | None,
                 files: dict[str, list[str]] | None = None):
        self.kind, self.name, self.base_dir = kind, name, base_dir
        self._files = {_canonical_split(k): v for k, v in (files or {}).items()}
        self._data = {}
        for raw_split, ds in datasets_by_split.items():
            self._data.setdefault(_canonical_split(raw_split), []).append(ds)
        first = next(iter(datasets_by_split.values()))
        self.features = getattr(first, "features", None)
        columns = list(getattr(first, "column_names", None) or [])
        if not columns:  # JSONL read by streaming: the columns are known only from a row
            try:
                columns = list(next(iter(first)).keys())
            except StopIteration:
                columns = []
        self.columns = columns
        lower = {c.lower(): c for c in columns}
        self.column_map = {}
        for field, aliases in COLUMN_ALIASES.items():
            for alias in aliases:
                if alias in lower:
                    self.column_map[field] = lower[alias]
                    break
        missing = [f for f in REQUIRED_FIELDS if f not in self.column_map]
        if missing:
            accepted = "; ".join(f"{f}: {'|'.join(COLUMN_ALIASES[f])}" for f in missing)
            raise EmoError(f"{name} lacks the required field(s) {', '.join(missing)} (accepted columns: "
                           f"{accepted}); its columns are: {', '.join(columns) or '(none)'}")
        self.missing_fields = [f for f in OPTIONAL_FIELDS if f not in self.column_map]
        self.splits = tuple(sorted(self._data, key=_split_sort_key))
        self._converters = {field: _converter(field, self._feature(col))
                            for field, col in self.column_map.items() if field not in ("image", "split")}
        self._ids: dict[str, int] = {}
        self._file_names: set[str] = set()
        self.renamed_ids = 0

    def _feature(self, column: str):
        try:
            return self.features[column] if self.features is not None else None
        except (KeyError, TypeError):
            return None

    def info(self) -> dict:
        return {"columns": self.columns, "column_map": self.column_map,
                "renamed_duplicate_ids": self.renamed_ids}

    def count(self, split: str) -> int:
        """Rows in `split` when cheaply known (map-style, parquet metadata, split info), else 0."""
        total = 0
        for ds in self._data[split]:
            try:
                total += len(ds)
                continue
            except TypeError:
                pass
            files = self._files.get(split) or []
            if files and all(f.endswith(".parquet") for f in files):
                import pyarrow.parquet as pq

                total += sum(pq.ParquetFile(f).metadata.num_rows for f in files)
                continue
            splits = getattr(getattr(ds, "info", None), "splits", None) or {}
            name = getattr(ds, "split", None)
            if name is not None and str(name) in splits and splits[str(name)].num_examples:
                total += int(splits[str(name)].num_examples)
                continue
            return 0
        return total

    def _rows(self, split: str) -> Iterator[dict]:
        import datasets

        image_col = self.column_map["image"]
        for ds in self._data[split]:
            feature = self._feature(image_col)
            if isinstance(feature, datasets.Image) and feature.decode:
                ds = ds.cast_column(image_col, datasets.Image(decode=False))  # decode ourselves: bad bytes
            try:
                yield from ds
            except (OSError, ConnectionError) as e:
                raise EmoError(f"reading {self.name} ({split}) failed: {str(e).splitlines()[0]}") from None

    def produce(self, split, stage, final, workers, keep=None):
        def rows():
            for i, row in enumerate(self._rows(split)):
                item = self._record(row, i, split)
                if keep is None or item[0]["split"] in keep:
                    yield item

        def materialise(item):
            record, payload, where, name = item
            try:
                if isinstance(payload, Path):  # an image file referenced by path: keep it where it is
                    from emocli.data.emoset import load_rgb

                    load_rgb(payload)
                    record["image"] = str(payload)
                else:
                    image = _decode(payload)
                    kept = _original_suffix(payload)
                    if kept:  # the source's own encoded bytes, unchanged (FID reads these pixels)
                        name = str(Path(name).with_suffix(kept))
                    target = stage / "images" / record["emotion"] / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if kept:
                        target.write_bytes(payload)
                    else:
                        image.save(target, format="JPEG", quality=JPEG_QUALITY)
                    record["image"] = str(final / "images" / record["emotion"] / name)
                    record["_bytes"] = "original" if kept else "reencoded"
            except Exception as e:  # _BadImage, CorruptImage and PIL's many exception types
                name = str(payload) if isinstance(payload, Path) else where
                return None, (name, getattr(e, "reason", None) or str(e) or type(e).__name__)
            return record, ()

        yield from _ordered_map(materialise, rows(), workers)

    def _record(self, row: dict, index: int, split: str):
        cols = self.column_map
        where = f"{self.name} [{split} row {index}]"

        def get(field):
            return row.get(cols[field]) if field in cols else None

        try:
            label = self._converters["emotion"](get("emotion"))
        except EmoError as e:
            raise EmoError(f"{where}: column {cols['emotion']!r}: {e.message}") from None
        emotion = EMOSET.labels[label]
        record_split = _canonical_split(get("split")) if isinstance(get("split"), str) and get("split") else split
        raw_image = get("image")
        payload, image_name = self._payload(raw_image)
        image_id = get("id")
        image_id = str(image_id) if image_id not in (None, "") else (
            Path(image_name).stem if image_name else f"{record_split}_{index:06d}")
        image_id = self._unique(image_id)
        if image_name:
            where = f"{where} ({image_name})"
        file_name = _safe_name(image_id)  # unique per emotion folder, also when two ids sanitise alike
        k = 1
        while f"{emotion}/{file_name}".lower() in self._file_names:
            k += 1
            file_name = f"{_safe_name(image_id)}-{k}"
        self._file_names.add(f"{emotion}/{file_name}".lower())
        record = {
            "id": image_id, "emotion": emotion, "label": label, "image": None, "split": record_split,
            "scene": None, "objects": [], "facial_expression": None, "human_action": None,
            "brightness": None, "colorfulness": None,
        }
        for field in OPTIONAL_FIELDS:
            if field in cols:
                record[field] = self._converters[field](get(field))
        return record, payload, where, f"{file_name}.jpg"

    def _payload(self, value):
        """(bytes | Path | PIL image | None, a file name for messages and ids)."""
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data:
                return bytes(data), path
            value = path
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value), None
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            return path, value
        if value is not None and hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
            return value, getattr(value, "filename", None) or None
        return None, None

    def _unique(self, image_id: str) -> str:
        n = self._ids.get(image_id, 0)
        self._ids[image_id] = n + 1
        if n == 0:
            return image_id
        self.renamed_ids += 1
        candidate = f"{image_id}-{n + 1}"
        while candidate in self._ids:
            n += 1
            candidate = f"{image_id}-{n + 1}"
        self._ids[candidate] = 1
        return candidate


class _BadImage(Exception):
    pass


def _decode(payload):
    from PIL import Image

    from emocli.data.emoset import _to_rgb

    if payload is None:
        raise _BadImage("no image data")
    if isinstance(payload, bytes):
        try:
            with Image.open(io.BytesIO(payload)) as im:
                im.load()
                return _to_rgb(im)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as e:
            raise _BadImage(f"unreadable image ({type(e).__name__}: {e})") from None
    payload.load()
    return _to_rgb(payload)


KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def _original_suffix(payload) -> str | None:
    """The file suffix under which encoded `payload` bytes are kept as they are (JPEG, PNG, WebP); None for
    decoded images and other formats, which are re-encoded as JPEG (quality JPEG_QUALITY)."""
    if not isinstance(payload, bytes):
        return None
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as im:
        return KEPT_FORMATS.get(im.format or "")


def _safe_name(image_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"
    return name[:200]


def _class_names(feature) -> list[str] | None:
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _converter(field: str, feature) -> Callable:
    """value -> canonical value for one field, honouring ClassLabel features (ints -> their names)."""
    inner = getattr(feature, "feature", None)  # List / Sequence of something
    names = _class_names(feature) or _class_names(inner)

    def name_of(value):
        if names is not None and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return names[int(value)] if 0 <= int(value) < len(names) else None
        return value

    if field == "emotion":
        def emotion(value) -> int:
            value = name_of(value)
            if value is None:
                raise EmoError("missing emotion")
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                if not 0 <= int(value) < len(EMOSET):
                    raise EmoError(f"emotion index {int(value)} is out of range 0..{len(EMOSET) - 1} "
                                   f"(EmoSet order: {', '.join(EMOSET.labels)})")
                return int(value)
            text = str(value).strip()
            if text.isdigit():
                return emotion(int(text))
            return EMOSET.index(text)
        return emotion
    if field == "objects":
        def objects(value) -> list[str]:
            if value is None:
                return []
            if isinstance(value, str):
                return [value] if value else []
            out = [name_of(v) for v in value]
            return [str(v) for v in out if v not in (None, "")]
        return objects
    if field in ("brightness", "colorfulness"):
        def number(value):
            from emocli.data.emoset import _number

            return _number(name_of(value))
        return number
    if field == "id":
        return lambda value: value

    def one(value):  # scene, facial_expression, human_action
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        value = name_of(value)
        return str(value) if value not in (None, "") else None
    return one


def open_source(source, streaming: bool = False) -> _Source:
    """Resolve `source` (a local path or a Hub id) into a reader; errors are one-line EmoErrors."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            fmt = TABLE_SUFFIXES.get(path.suffix.lower())
            if fmt is None:
                raise EmoError(f"{path} is not a supported source file (expected .parquet or .jsonl; or pass "
                               f"an EmoSet release folder, a `datasets` saved folder or a Hub id)")
            return _table_from_files(fmt, {"train": [str(path)]}, path, path.parent, streaming=True)
        return _from_folder(path)
    if _looks_like_hub_id(text) and not text.startswith(("/", "~")):
        return _from_hub(text, streaming)
    raise EmoError(f"source {text!r} does not exist (pass an EmoSet release folder, a parquet/JSONL export, "
                   f"a `datasets` saved folder, or a Hub dataset id like owner/name)")


def _from_folder(path: Path) -> _Source:
    if (path / MANIFEST).is_file():
        raise EmoError(f"{path} is already a prepared folder; pass the original source (a release folder, "
                       f"an export or a Hub id)")
    if (path / "info.json").is_file() or (path / "train.json").is_file():
        return _ReleaseSource(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _from_saved(path)
    for suffix, fmt in TABLE_SUFFIXES.items():
        files = sorted(p for p in path.rglob(f"*{suffix}") if not any(part.startswith(".") for part in
                                                                     p.relative_to(path).parts))
        if files:
            return _table_from_files(fmt, _files_by_split(path, files), path, path, streaming=True)
    raise EmoError(f"{path} is not an EmoSet source: no EmoSet release (info.json, train.json), no "
                   f"parquet/JSONL files and no `datasets` saved folder (dataset_dict.json or state.json)")


def _files_by_split(root: Path, files: list[Path]) -> dict[str, list[str]]:
    """Split of each file from its name or folder (train-00000-of-00002.parquet, val/x.parquet, ...)."""
    known = ("train", "validation", "valid", "val", "dev", "test")
    out: dict[str, list[str]] = {}
    for file in files:
        words = [w for part in file.relative_to(root).parts for w in re.split(r"[^a-z]+", part.lower()) if w]
        split = next((w for w in words if w in known), "train")
        out.setdefault(_canonical_split(split), []).append(str(file))
    return out


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:  # no retry warnings from the Hub client on stderr: a failure becomes one EmoError line
        import huggingface_hub

        huggingface_hub.utils.logging.set_verbosity_error()
        huggingface_hub.utils.disable_progress_bars()
    except (ImportError, AttributeError):
        pass
    return datasets


def _table_from_files(fmt: str, data_files: dict, name: Path, base_dir: Path, streaming: bool) -> _Source:
    datasets = _quiet_datasets()
    kind = "parquet" if fmt == "parquet" else "jsonl"
    try:
        loaded = datasets.load_dataset(fmt, data_files=data_files, streaming=streaming)
    except Exception as e:  # datasets raises many types for unreadable files
        raise EmoError(f"cannot read {name} as {kind}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return _TableSource(kind, str(name), dict(loaded), base_dir, files=data_files)


def _from_saved(path: Path) -> _Source:
    datasets = _quiet_datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise EmoError(f"cannot read {path} as a `datasets` saved folder: {str(e).splitlines()[0]}") from None
    by_split = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if not by_split:
        raise EmoError(f"{path} holds no dataset splits")
    return _TableSource("datasets-saved", str(path), by_split, path)


def _from_hub(repo_id: str, streaming: bool) -> _Source:
    datasets = _quiet_datasets()
    try:
        loaded = datasets.load_dataset(repo_id, streaming=streaming)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EmoError(f"cannot load Hub dataset {repo_id!r} ({first}); no local folder has that name either. "
                       f"Offline, or for data not on the Hub, pass a local path: an EmoSet release folder, a "
                       f"parquet/JSONL export or a `datasets` saved folder") from None
    by_split = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
    return _TableSource("hub", repo_id, by_split, None)


# --- the pipeline ----------------------------------------------------------------------------------

def _ordered_map(fn: Callable, items: Iterable, workers: int, chunk: int = 256) -> Iterator:
    """fn over items in order, `workers` threads at a time (image decoding releases the GIL)."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) >= chunk:
                yield from pool.map(fn, batch)
                batch = []
        if batch:
            yield from pool.map(fn, batch)


def check_output_folder(out: Path, overwrite: bool, source: Path | None, manifest: str = MANIFEST,
                        kind: str = "prepared folder", source_name: str = "source") -> None:
    """Refuse to write over anything but an empty folder or (with --overwrite) one this command made."""
    if out.exists() and not out.is_dir():
        raise EmoError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise EmoError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
        if not (out / manifest).is_file():
            raise EmoError(f"--out {out} is not a {kind} (no {manifest}); refusing to replace it, "
                           f"choose another --out")
    if source is not None and (source == out or out in source.parents):
        raise EmoError(f"--out {out} contains the {source_name} {source}; choose another --out")


def stage_folder(out: Path) -> Path:
    """A fresh temporary folder next to `out` (same file system, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    return stage


def commit_folder(stage: Path, out: Path) -> None:
    """Replace `out` by `stage` (the old `out`, if any, is removed only after the new one is in place)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(out: Path, what: str = "the prepared folder"):
    """Build `out` in a temporary folder beside it and rename it into place when the block ends.

    On any error nothing is left behind and an existing `out` is untouched; an OSError (a full disk, a
    read-only folder) becomes one line naming the path and the cause. Every `emo data` writer uses this.
    """
    try:
        stage = stage_folder(out)
    except OSError as e:
        raise io_failed(e, out.parent, f"write {what} in") from None
    try:
        yield stage
        commit_folder(stage, out)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        writing = e.filename is None or str(e.filename).startswith(str(stage))
        raise io_failed(e, stage, f"write {what} at" if writing else "read",
                        f"nothing was written to {out}" + ("; free space and run the command again" if writing else "")
                        ) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def dumps(obj, indent: int | None = 2, level: int = 0) -> str:
    """JSON like json.dumps(indent=...), except that lists of scalars stay on one line (tables stay readable)."""
    if indent is None:
        return json.dumps(obj, ensure_ascii=False)
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent, level + 1)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj, indent) + "\n", encoding="utf-8")


def write_balanced(folder: Path, rows: list[dict], seed: int, suffix: str = "") -> dict[str, int]:
    """balanced/<property><suffix>.json for both properties; returns their lengths."""
    sizes = {}
    for prop in PROPERTIES:
        ids = balance(rows, prop, seed)
        write_json(folder / "balanced" / f"{prop}{suffix}.json", ids, indent=None)
        sizes[prop] = len(ids)
    return sizes


def prepare_emoset(source, out, streaming: bool = False, seed: int = 0, split=None,
                   min_attribute_images: int = 3, overwrite: bool = False, workers: int | None = None) -> Path:
    """Prepare EmoSet from `source` into the folder `out` (see the module docstring); returns `out`.

    `split`: None for every split of the source, or one split name / a list of them.
    `streaming` applies to Hub ids (local parquet/JSONL files are always read as a stream).
    `workers`: threads that open and check images (default: up to 8).
    Bad (missing or undecodable) images are skipped, named in warnings and listed in prepare.json.
    """
    from emocli import __version__
    from emocli.progress import track

    if isinstance(min_attribute_images, bool) or int(min_attribute_images) < 1:
        raise EmoError(f"min_attribute_images must be a positive integer, got {min_attribute_images!r}")
    out = Path(out).expanduser().resolve()
    local = Path(str(source)).expanduser()
    source_path = local.resolve() if local.exists() else None
    check_output_folder(out, overwrite, source_path)
    src = open_source(source, streaming=streaming)
    splits, keep = _select_splits(src, split)
    if src.missing_fields:
        what = ("attribute outputs (attributes.jsonl, attribute_counts.json, balanced/, attribute_vocab.json) "
                "will be empty" if {"scene", "objects"} <= set(src.missing_fields) else
                "those fields stay empty in the records")
        log.warning("%s has no %s field(s) (its columns: %s); %s", src.name, ", ".join(src.missing_fields),
                    ", ".join(getattr(src, "columns", [])), what)
    workers = max(1, int(workers if workers is not None else min(8, os.cpu_count() or 1)))

    with staged_folder(out) as stage:
        records: list[dict] = []
        bad: list[tuple[str, str]] = []
        image_bytes = {"original": 0, "reencoded": 0}  # embedded images: kept as they came, or re-encoded
        for name in splits:
            total = src.count(name)
            results = src.produce(name, stage, out, workers, keep)
            every = max(1000, total // 20)
            for record, problem in track(results, total=total, description=f"checking {name} images",
                                         every=every):
                if record is None:
                    bad.append(problem)
                    if len(bad) <= MAX_NAMED_WARNINGS:
                        log.warning("skipping bad image %s: %s", problem[0], problem[1])
                    continue
                if "_bytes" in record:
                    image_bytes[record["_bytes"]] += 1
                records.append({key: record[key] for key in RECORD_FIELDS})
        if len(bad) > MAX_NAMED_WARNINGS:
            log.warning("... and %d more bad images (all listed in %s)", len(bad) - MAX_NAMED_WARNINGS, MANIFEST)
        if not records:
            raise EmoError(f"{src.name}: no readable images in split(s) {', '.join(splits)}")
        records.sort(key=lambda r: _split_sort_key(r["split"]))  # stable: source order within a split
        manifest = _build(stage, records, seed, int(min_attribute_images))
        manifest.update({
            "format": FORMAT, "source": src.name, "source_kind": src.kind, "streaming": bool(streaming),
            "seed": int(seed), "min_attribute_images": int(min_attribute_images),
            "requested_splits": sorted(keep, key=_split_sort_key) if keep else list(splits),
            "bad_image_count": len(bad), "bad_images": [p for p, _ in bad],
            "bad_image_reasons": {p: r for p, r in bad},
            "missing_fields": list(src.missing_fields), **src.info(),
            "image_bytes": {**image_bytes, "reencoded_as": f"JPEG quality {JPEG_QUALITY}",
                            "note": "embedded JPEG/PNG/WebP bytes are written unchanged; decoded images and other "
                                    "formats are re-encoded"},
            "emocli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        ordered = {k: manifest[k] for k in _MANIFEST_ORDER if k in manifest}
        ordered.update({k: v for k, v in manifest.items() if k not in ordered})
        write_json(stage / MANIFEST, ordered)
    return out


_MANIFEST_ORDER = ("format", "source", "source_kind", "streaming", "seed", "min_attribute_images", "splits",
                   "requested_splits", "attribute_splits", "counts", "attribute_coverage", "attribute_classes",
                   "balanced", "bad_image_count", "bad_images", "bad_image_reasons", "missing_fields")


def _select_splits(src: _Source, split) -> tuple[list[str], set[str] | None]:
    """(source splits to read, record splits to keep or None for all)."""
    if not src.splits:
        raise EmoError(f"{src.name} has no splits")
    if split is None:
        return list(src.splits), None
    wanted = [split] if isinstance(split, str) else list(split)
    wanted = [_canonical_split(s.strip()) for w in wanted for s in str(w).split(",") if s.strip()]
    if "split" in getattr(src, "column_map", {}):  # the rows name their split: read all, keep the wanted
        return list(src.splits), set(wanted)
    for name in wanted:
        if name not in src.splits:
            raise EmoError(f"{src.name} has no {name!r} split{close_matches(name, src.splits)}; "
                           f"present: {', '.join(src.splits)}")
    return wanted, None


def _build(stage: Path, records: list[dict], seed: int, min_images: int) -> dict:
    """Write records, attributes, counts, balanced lists and vocabulary; return the manifest's statistics."""
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise EmoError(f"image id {dup!r} occurs more than once in the source; ids must be unique")
    write_jsonl(stage / "records.jsonl", records)
    rows = [row for row in (attribute_row(r) for r in records) if row is not None]
    write_jsonl(stage / "attributes.jsonl", rows)

    splits = sorted({r["split"] for r in records}, key=_split_sort_key)
    attribute_splits = ["train"] if "train" in splits else splits
    if "train" not in splits:
        log.warning("no train split: attribute counts, balanced lists and the vocabulary use %s",
                    ", ".join(splits))
    training = [r for r in rows if r["split"] in attribute_splits]
    counts = count_attributes(training)
    write_json(stage / "attribute_counts.json", counts)
    write_json(stage / "attribute_vocab.json", attribute_vocab(counts, min_images))
    sizes = write_balanced(stage, training, seed)

    per_split_emotion = {s: {e: 0 for e in EMOSET.labels} for s in splits}
    for r in records:
        per_split_emotion[r["split"]][r["emotion"]] += 1
    coverage = {s: {"scene": 0, "object": 0, "none": 0} for s in splits}
    with_attr = {row["id"]: row["property"] for row in rows}
    for r in records:
        coverage[r["split"]][with_attr.get(r["id"], "none")] += 1
    return {
        "splits": splits,
        "attribute_splits": attribute_splits,
        "counts": {
            "total": len(records),
            "per_split": {s: sum(v.values()) for s, v in per_split_emotion.items()},
            "per_emotion": {e: sum(per_split_emotion[s][e] for s in splits) for e in EMOSET.labels},
            "per_split_emotion": per_split_emotion,
        },
        "attribute_coverage": coverage,
        "attribute_classes": {p: len(counts[p]) for p in PROPERTIES},
        "balanced": sizes,
    }
