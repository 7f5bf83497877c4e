"""Captioned images for text-to-image training: `emo data prepare captions` and `emo data synth captions`.

A prepared caption folder (format "emo-prepared-captions/1"; docs/data.md):

    prepare.json    {"dataset": "captions", "format", "source", "source_kind", "seed", "test_fraction",
                     "counts": {"total", "per_split", "captions"}, "bad_image_count", "bad_images",
                     "bad_image_reasons", "missing_caption_count", ...}
    train.jsonl     one line per image: {"id": str, "image": path relative to DIR, "captions": [str, ...]}
    test.jsonl      the same for the held-out images (their captions are the evaluation prompts)
    images/<id>.png only for sources that embed images (parquet, Hub, `datasets` folders)

Sources: a folder with `train_info.json` (the seed's layout: image path -> caption or list of
captions; `test_info.json` beside it becomes the test split), a JSONL / CSV / parquet file, an
`imagefolder` (images + metadata.jsonl|csv with `file_name` and a caption column), a `datasets`
saved folder, or a Hub id. Without a test split in the source, `test_fraction` of the images
(seeded) are held out. Everything is written into a temporary folder renamed at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from emocli.errors import EmoError

log = logging.getLogger("emocli")

FORMAT = "emo-prepared-captions/1"
MANIFEST = "prepare.json"
IMAGE_COLUMNS = ("image", "img", "image_path", "file_name", "filename", "path", "file")
CAPTION_COLUMNS = ("captions", "caption", "text", "prompt", "description", "prompts", "texts")
ID_COLUMNS = ("id", "image_id", "img_id")
INFO_FILES = {"train": "train_info.json", "test": "test_info.json"}
TABLE_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
MAX_NAMED_WARNINGS = 20


def as_captions(value) -> list[str]:
    """A caption cell -> a list of non-empty captions: a string, a list of strings, or a dict with
    one of CAPTION_COLUMNS (the seed's train_info.json values are strings or lists)."""
    if isinstance(value, dict):
        for key in CAPTION_COLUMNS:
            if key in value:
                return as_captions(value[key])
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):  # a CSV cell holding a JSON list
            try:
                return as_captions(json.loads(text))
            except ValueError:
                pass
        return [text] if text else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [c.strip() for c in (str(v) for v in value if v is not None) if c.strip()]
    return []


# --- reading a prepared folder -----------------------------------------------------------------------

class PreparedCaptions:
    """A prepared caption folder: `.manifest`, `.records(split)` with absolute image paths."""

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise EmoError(f"{self.path} is not a prepared caption folder (no {MANIFEST}); make one with "
                           f"`emo data prepare captions --source ... --out ...`")
        try:
            self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EmoError(f"cannot read {manifest}: {e}") from None
        if self.manifest.get("dataset") != "captions":
            raise EmoError(f"{self.path} is a prepared {self.manifest.get('dataset', 'EmoSet')} folder, not a "
                           f"caption folder (`emo data prepare captions`)")

    def records(self, split: str) -> list[dict]:
        path = self.path / f"{split}.jsonl"
        if not path.is_file():
            raise EmoError(f"{self.path} has no {split}.jsonl (splits: {', '.join(self.manifest.get('splits', []))})")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for row in rows:
            row["image"] = str(self.path / row["image"])
        return rows


# --- sources -----------------------------------------------------------------------------------------

def _rows_from_info(folder: Path):
    """(kind, {split: [(image_path, captions, id)]}) from train_info.json / test_info.json."""
    out = {}
    for split, name in INFO_FILES.items():
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EmoError(f"cannot read {path}: {e}") from None
        items = data.items() if isinstance(data, dict) else (
            (_first(row, IMAGE_COLUMNS), row) for row in data if isinstance(row, dict))
        rows = []
        for image, value in items:
            if image is None:
                raise EmoError(f"{path}: an entry names no image (accepted keys: {', '.join(IMAGE_COLUMNS)})")
            p = Path(str(image)).expanduser()
            rows.append((p if p.is_absolute() else folder / p, as_captions(value), Path(str(image)).stem))
        out[split] = rows
    return "info-json", out


def _first(row: dict, names):
    lower = {str(k).lower(): k for k in row}
    for name in names:
        if name in lower and row[lower[name]] not in (None, ""):
            return row[lower[name]]
    return None


def _column(columns, names, what: str, source: str, required: bool = True):
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    if required:
        raise EmoError(f"{source} has no {what} column (accepted: {', '.join(names)}); its columns are: "
                       f"{', '.join(columns) or '(none)'}")
    return None


def _rows_from_table(datasets_by_split: dict, base_dir: Path | None, source: str):
    import datasets

    out = {}
    for split, ds in datasets_by_split.items():
        columns = list(getattr(ds, "column_names", None) or [])
        if not columns:
            try:
                columns = list(next(iter(ds)).keys())
            except StopIteration:
                columns = []
        image_col = _column(columns, IMAGE_COLUMNS, "image", source)
        caption_col = _column(columns, CAPTION_COLUMNS, "caption", source)
        id_col = _column(columns, ID_COLUMNS, "id", source, required=False)
        split_col = _column(columns, ("split",), "split", source, required=False)
        feature = (getattr(ds, "features", None) or {}).get(image_col)
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(image_col, datasets.Image(decode=False))
        for i, row in enumerate(ds):
            payload, name = _payload(row.get(image_col), base_dir)
            image_id = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else (
                Path(name).stem if name else f"{split}_{i:06d}")
            row_split = str(row[split_col]) if split_col and row.get(split_col) else split
            row_split = {"validation": "test", "val": "test", "testing": "test", "training": "train"}.get(
                row_split.lower(), row_split.lower())
            out.setdefault(row_split, []).append((payload, as_captions(row.get(caption_col)), image_id))
    return out


def _payload(value, base_dir: Path | None):
    """(Path | bytes | PIL image | None, a name for ids and messages)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), value.get("path")
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and value:
        p = Path(value).expanduser()
        return (p if p.is_absolute() or base_dir is None else base_dir / p), value
    if value is not None and hasattr(value, "size") and hasattr(value, "mode"):
        return value, getattr(value, "filename", None)
    return None, None


def _open_source(source: str, streaming: bool):
    """(kind, name, {split: [(payload, captions, id)]})."""
    from emocli.data.prepare import _looks_like_hub_id, _quiet_datasets

    path = Path(source).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir() and (path / MANIFEST).is_file():
            raise EmoError(f"{path} is already a prepared folder; pass the original source")
        if path.is_dir() and any((path / n).is_file() for n in INFO_FILES.values()):
            kind, rows = _rows_from_info(path)
            return kind, str(path), rows
        datasets = _quiet_datasets()
        if path.is_file():
            fmt = TABLE_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise EmoError(f"{path} is not a supported caption source (expected .json/.jsonl/.csv/.parquet, "
                               f"or a folder with train_info.json, an imagefolder, a `datasets` folder or a Hub id)")
            if path.suffix.lower() == ".json":  # a train_info.json-style mapping named directly
                return "info-json", str(path), _rows_from_info_file(path)
            loader = lambda: datasets.load_dataset(fmt, data_files={"train": str(path)}, streaming=True)  # noqa: E731
            base = path.parent
        elif (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loader = lambda: datasets.load_from_disk(str(path))  # noqa: E731
            base = path
        elif any((path / f"metadata{s}").is_file() for s in (".jsonl", ".csv", ".parquet")) or any(
                (path / split / f"metadata{s}").is_file() for split in ("train", "test")
                for s in (".jsonl", ".csv", ".parquet")):
            loader = lambda: datasets.load_dataset("imagefolder", data_dir=str(path))  # noqa: E731
            base = path
        else:
            raise EmoError(f"{path} is not a caption source: no train_info.json, no metadata.jsonl/csv "
                           f"(imagefolder) and no `datasets` saved folder")
        try:
            loaded = loader()
        except EmoError:
            raise
        except Exception as e:  # datasets raises many types for unreadable files
            raise EmoError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        by_split = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
        return ("table", str(path), _rows_from_table(by_split, base, str(path)))
    if _looks_like_hub_id(source):
        datasets = _quiet_datasets()
        try:
            loaded = datasets.load_dataset(source, streaming=streaming)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EmoError(f"cannot load Hub dataset {source!r} ({first}); offline, pass a local path") from None
        by_split = dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}
        return "hub", source, _rows_from_table(by_split, None, source)
    raise EmoError(f"caption source {source!r} does not exist (pass a folder with train_info.json, a "
                   f"JSONL/CSV/parquet file, an imagefolder, a `datasets` folder or a Hub id)")


def _rows_from_info_file(path: Path):
    folder = path.parent
    tmp = {"train": path}
    out = {}
    for split, file in tmp.items():
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise EmoError(f"{path}: expected an object mapping image paths to captions")
        out[split] = [((folder / k) if not Path(k).is_absolute() else Path(k), as_captions(v), Path(k).stem)
                      for k, v in data.items()]
    return out


# --- preparing -------------------------------------------------------------------------------------

def prepare_captions(source, out, streaming: bool = False, seed: int = 0, test_fraction: float = 0.05,
                     overwrite: bool = False, workers: int | None = None) -> Path:
    """Prepare a captioned image set into `out` (see the module docstring); returns `out`."""
    from emocli import __version__
    from emocli.data.prepare import _ordered_map, _safe_name, check_output_folder, staged_folder, write_jsonl
    from emocli.progress import track

    if not 0.0 <= float(test_fraction) < 1.0:
        raise EmoError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    out = Path(out).expanduser().resolve()
    local = Path(str(source)).expanduser()
    check_output_folder(out, overwrite, local.resolve() if local.exists() else None)
    kind, name, by_split = _open_source(str(source), streaming)
    rows = [(split, *row) for split, items in by_split.items() for row in items]
    if not rows:
        raise EmoError(f"{name} holds no captioned images (an empty caption set)")
    workers = max(1, int(workers if workers is not None else min(8, os.cpu_count() or 1)))

    with staged_folder(out) as stage:
        used_ids: set[str] = set()

        def materialise(item):
            split, payload, captions, image_id = item
            if not captions:
                return None, ("caption", str(payload) if isinstance(payload, Path) else image_id, "no caption")
            safe = _safe_name(str(image_id))
            try:
                if isinstance(payload, Path):
                    from emocli.data.emoset import load_rgb

                    load_rgb(payload)
                    image = os.path.relpath(payload, out)
                else:
                    from emocli.data.prepare import _decode

                    picture = _decode(payload)
                    target = stage / "images" / f"{safe}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    picture.save(target, format="PNG")
                    image = f"images/{safe}.png"
            except Exception as e:  # CorruptImage, _BadImage, PIL's exception types
                where = str(payload) if isinstance(payload, Path) else f"{name} [{split}] {image_id}"
                return None, ("image", where, getattr(e, "reason", None) or str(e) or type(e).__name__)
            return {"split": split, "id": str(image_id), "image": image, "captions": captions}, ()

        records, bad, no_caption = [], [], []
        for record, problem in track(_ordered_map(materialise, rows, workers), total=len(rows),
                                     description="checking images", every=max(1000, len(rows) // 20)):
            if record is None:
                what, where, reason = problem
                if what == "caption":
                    no_caption.append(where)
                    continue
                bad.append((where, reason))
                if len(bad) <= MAX_NAMED_WARNINGS:
                    log.warning("skipping bad image %s: %s", where, reason)
                continue
            base, k = record["id"], 1
            while record["id"] in used_ids:  # ids stay unique (the sample layout names files after them)
                k += 1
                record["id"] = f"{base}-{k}"
            used_ids.add(record["id"])
            records.append(record)
        if len(bad) > MAX_NAMED_WARNINGS:
            log.warning("... and %d more bad images (all listed in %s)", len(bad) - MAX_NAMED_WARNINGS, MANIFEST)
        if not records:
            named = ", ".join(w for w, _ in bad[:3]) or ", ".join(no_caption[:3])
            raise EmoError(f"{name}: no usable captioned image ({len(bad)} bad or missing images, {len(no_caption)} "
                           f"without a caption; e.g. {named})")
        splits = _assign_splits(records, seed, float(test_fraction))
        for split, items in splits.items():
            write_jsonl(stage / f"{split}.jsonl",
                        ({"id": r["id"], "image": r["image"], "captions": r["captions"]} for r in items))
        manifest = {
            "dataset": "captions", "format": FORMAT, "source": name, "source_kind": kind,
            "streaming": bool(streaming), "seed": int(seed), "test_fraction": float(test_fraction),
            "test_from_source": "test" in by_split, "splits": list(splits),
            "counts": {"total": len(records), "per_split": {s: len(v) for s, v in splits.items()},
                       "captions": sum(len(r["captions"]) for r in records)},
            "bad_image_count": len(bad), "bad_images": [p for p, _ in bad],
            "bad_image_reasons": {p: r for p, r in bad},
            "missing_caption_count": len(no_caption), "missing_captions": no_caption[:100],
            "emocli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def _assign_splits(records: list[dict], seed: int, test_fraction: float) -> dict[str, list[dict]]:
    """The source's splits (other names than train/test are kept), else a seeded `test_fraction` hold-out."""
    names = {r["split"] for r in records}
    if names != {"train"}:
        order = ["train", "test"] + sorted(names - {"train", "test"})
        return {s: [r for r in records if r["split"] == s] for s in order if any(r["split"] == s for r in records)}
    n_test = int(round(len(records) * test_fraction))
    if test_fraction > 0 and len(records) > 1:
        n_test = min(max(n_test, 1), len(records) - 1)
    held = set(np.random.default_rng(seed).permutation(len(records))[:n_test].tolist())
    out = {"train": [r for i, r in enumerate(records) if i not in held]}
    if held:
        out["test"] = [r for i, r in enumerate(records) if i in held]
    return out


# --- synthetic captions ------------------------------------------------------------------------------

SYNTH_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 220, 40),
                 "purple": (140, 50, 180), "white": (245, 245, 245), "black": (20, 20, 20),
                 "orange": (245, 140, 30)}
SYNTH_SHAPES = ("circle", "square", "triangle")


def synth_captions(out, n: int, seed: int = 0, size: int = 64, corrupt: int = 0, missing: int = 0) -> Path:
    """A seed-like caption folder: `images/*.png` and `train_info.json` (relative path -> [captions]).

    Each image is one coloured shape on a coloured background; its captions say exactly that ("a red
    circle on a blue background"), so CLIP-T is meaningful once a tiny model has learnt them.
    `corrupt` files are truncated PNGs and `missing` entries name absent files (bad-input tests).
    """
    from PIL import Image, ImageDraw

    if n < 1:
        raise EmoError(f"--n must be at least 1, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = list(SYNTH_COLOURS)
    info = {}
    for i in range(n):
        shape = SYNTH_SHAPES[int(rng.integers(len(SYNTH_SHAPES)))]
        fg, bg = rng.choice(len(colours), size=2, replace=False)
        fg, bg = colours[int(fg)], colours[int(bg)]
        image = Image.new("RGB", (size, size), SYNTH_COLOURS[bg])
        draw = ImageDraw.Draw(image)
        r = size * float(rng.uniform(0.22, 0.34))
        cx, cy = (size / 2 + size * float(v) for v in rng.uniform(-0.12, 0.12, 2))
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=SYNTH_COLOURS[fg])
        elif shape == "square":
            draw.rectangle(box, fill=SYNTH_COLOURS[fg])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=SYNTH_COLOURS[fg])
        rel = f"images/{i:05d}.png"
        image.save(out / rel)
        article = "an" if fg[0] in "aeiou" else "a"
        info[rel] = [f"{article} {fg} {shape} on a {bg} background", f"{fg} {shape}, {bg} background"]
    for j in range(corrupt):
        rel = f"images/corrupt_{j:03d}.png"
        (out / rel).write_bytes((out / "images/00000.png").read_bytes()[:40])
        info[rel] = ["a broken image"]
    for j in range(missing):
        info[f"images/missing_{j:03d}.png"] = ["an image that is not there"]
    (out / "train_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out
