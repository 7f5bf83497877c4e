"""Reader for an EmoSet-118K release in its official layout.

    root/info.json, root/train.json [, val.json, test.json]
    root/image/<emotion>/<emotion>_<num>.jpg
    root/annotation/<emotion>/<emotion>_<num>.json

Each split file is a JSON list of [emotion, image_id, "image/...jpg", "annotation/...json"]. Records
come out in one canonical shape (see `EmoSetRelease.records`); images are opened with `load_rgb`,
which always yields RGB and turns unreadable files into `CorruptImage`; `EmoSetImages` skips such
images (returns None, logs, remembers the path) and `collate_skip_bad` drops them from a batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emocli.emotions import EMOSET
from emocli.errors import EmoError, close_matches

log = logging.getLogger("emocli")

SPLITS = ("train", "val", "test")
REQUIRED_FILES = ("info.json", "train.json")


class CorruptImage(Exception):
    """An image that is missing or cannot be decoded; `.path` names it, `.reason` says why."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class EmoSetRelease:
    """An EmoSet-118K release folder (the official layout; also what `synth_emoset` writes).

    `.splits` lists the split files present, in train/val/test order. `.records(split)` returns
    canonical records (dicts):

        id                 "amusement_00042"
        emotion            one of the 8 EmoSet emotions
        label              its index in EMOSET (amusement 0 ... sadness 7)
        image              absolute path of the image file (str; existence is not checked here)
        split              "train" | "val" | "test"
        scene              str | None
        objects            list[str] (the annotation's "object" list; [] when absent)
        facial_expression  str | None
        human_action       str | None
        brightness         float | None (0.0 ... 1.0 in 0.1 steps)
        colorfulness       float | None

    A missing annotation file leaves the attributes None / [] and is counted in
    `.missing_annotations`; an unreadable one in `.bad_annotations` (lists of paths).
    """

    def __init__(self, root):
        self.root = Path(root).expanduser().resolve()
        if not self.root.exists():
            raise EmoError(f"{self.root} does not exist (expected an EmoSet release folder with "
                           f"{', '.join(REQUIRED_FILES)})")
        if not self.root.is_dir():
            raise EmoError(f"{self.root} is not an EmoSet release: not a folder")
        missing = [name for name in REQUIRED_FILES if not (self.root / name).is_file()]
        if missing:
            raise EmoError(f"{self.root} is not an EmoSet release: missing {', '.join(missing)}")
        self.info = _read_json(self.root / "info.json")
        self._check_info()
        self.splits: tuple[str, ...] = tuple(s for s in SPLITS if (self.root / f"{s}.json").is_file())
        self.missing_annotations: list[str] = []
        self.bad_annotations: list[str] = []
        self._cache: dict[tuple[str, bool], list[dict]] = {}

    def __repr__(self) -> str:
        return f"EmoSetRelease({str(self.root)!r}, splits={self.splits})"

    def _check_info(self) -> None:
        path = self.root / "info.json"
        try:
            label2idx = self.info["emotion"]["label2idx"]
        except (TypeError, KeyError):
            raise EmoError(f"{path}: no emotion.label2idx; is this EmoSet's info.json?") from None
        expected = {name: i for i, name in enumerate(EMOSET.labels)}
        if label2idx != expected:
            raise EmoError(f"{path}: emotion.label2idx is {label2idx}, expected EmoSet's {expected}")

    def records(self, split: str, annotations: bool = True) -> list[dict]:
        """Canonical records of one split, in the split file's order (cached; a fresh list each call).

        annotations=False skips reading the per-image annotation files (attributes stay None / []),
        which is much faster on the full 118K set when only images and labels are needed.
        """
        if split not in self.splits:
            raise EmoError(f"{self.root} has no {split!r} split{close_matches(split, SPLITS)}; "
                           f"present: {', '.join(self.splits)}")
        key = (split, bool(annotations))
        if key not in self._cache:
            self._cache[key] = self._load(split, bool(annotations))
        return [dict(r, objects=list(r["objects"])) for r in self._cache[key]]

    def all_records(self, annotations: bool = True) -> list[dict]:
        """Records of every present split, train then val then test."""
        return [r for split in self.splits for r in self.records(split, annotations=annotations)]

    def _load(self, split: str, annotations: bool) -> list[dict]:
        path = self.root / f"{split}.json"
        entries = _read_json(path)
        if not isinstance(entries, list):
            raise EmoError(f"{path}: expected a JSON list of [emotion, image_id, image, annotation] entries")
        out: list[dict] = []
        missing_before, bad_before = len(self.missing_annotations), len(self.bad_annotations)
        for i, entry in enumerate(entries):
            if (not isinstance(entry, (list, tuple)) or len(entry) != 4
                    or not all(isinstance(x, str) for x in entry)):
                raise EmoError(f"{path}: entry {i} {entry!r} is not [emotion, image_id, image, annotation]")
            emotion, image_id, image_rel, ann_rel = entry
            if emotion not in EMOSET.labels:
                raise EmoError(
                    f"{path}: entry {i} {entry!r} has unknown emotion {emotion!r}"
                    f"{close_matches(emotion, EMOSET.labels)}; valid: {', '.join(EMOSET.labels)}"
                )
            record = {
                "id": image_id,
                "emotion": emotion,
                "label": EMOSET.labels.index(emotion),
                "image": str(self.root / image_rel),
                "split": split,
                "scene": None,
                "objects": [],
                "facial_expression": None,
                "human_action": None,
                "brightness": None,
                "colorfulness": None,
            }
            if annotations:
                record.update(self._attributes(self.root / ann_rel))
            out.append(record)
        n_missing = len(self.missing_annotations) - missing_before
        n_bad = len(self.bad_annotations) - bad_before
        if n_missing:
            log.warning("%s: %d of %d annotation files missing (e.g. %s); their attributes are empty",
                        split, n_missing, len(out), self.missing_annotations[missing_before])
        if n_bad:
            log.warning("%s: %d of %d annotation files unreadable (e.g. %s); their attributes are empty",
                        split, n_bad, len(out), self.bad_annotations[bad_before])
        return out

    def _attributes(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.missing_annotations.append(str(path))
            return {}
        except (OSError, UnicodeDecodeError, ValueError):
            self.bad_annotations.append(str(path))
            return {}
        if not isinstance(data, dict):
            self.bad_annotations.append(str(path))
            return {}
        objects = data.get("object")
        if objects is None:
            objects = []
        elif isinstance(objects, str):
            objects = [objects]
        return {
            "scene": _one(data.get("scene")),
            "objects": [str(o) for o in objects if isinstance(o, str)],
            "facial_expression": _one(data.get("facial_expression")),
            "human_action": _one(data.get("human_action")),
            "brightness": _number(data.get("brightness")),
            "colorfulness": _number(data.get("colorfulness")),
        }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise EmoError(f"cannot read {path}: {e}") from None
    except ValueError as e:
        raise EmoError(f"{path} is not valid JSON: {e}") from None


def _one(value) -> str | None:
    if isinstance(value, list):  # tolerate a one-element list where a single value is expected
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


# --- images ---------------------------------------------------------------------------------------

def load_rgb(path) -> Image.Image:
    """Open an image fully decoded as RGB, or raise CorruptImage(path, reason).

    Grayscale, palette, CMYK and 16-bit images are converted; images with alpha (RGBA, LA, PA,
    palette or RGB with a transparency key) are composited on white. The file's contents decide the
    decoder, not its extension (a PNG saved as .jpg opens fine). Truncated files are rejected: the
    image is decoded eagerly, and PIL's ImageFile.LOAD_TRUNCATED_IMAGES must stay False.
    """
    p = Path(path)
    if not p.exists():
        raise CorruptImage(p, "file not found")
    if not p.is_file():
        raise CorruptImage(p, "not a file")
    try:
        with Image.open(p) as im:
            im.load()
            return _to_rgb(im)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise CorruptImage(p, f"unreadable image ({type(e).__name__}: {e})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float: scale to 8 bits
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        if top > 255:
            arr = arr * (255.0 / (65535.0 if top <= 65535 else top))
        gray = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
        return gray.convert("RGB")
    return im.convert("RGB")


class EmoSetImages(torch.utils.data.Dataset):
    """Images of canonical records, for a DataLoader with `collate_fn=collate_skip_bad`.

    `transform` turns the RGB PIL image into a tensor (e.g. `image_transform(...)`). An item is
    {"pixel_values": tensor, "label": int, "index": int (position in this dataset)}, or None when the
    image is missing or unreadable; the path then goes into `.bad_images` (once) and a one-line
    warning is logged on the "emocli" logger. With DataLoader workers, `.bad_images` fills in the
    worker processes only; the warnings still reach the log.
    """

    def __init__(self, records, transform):
        if not callable(transform):
            raise TypeError(f"transform must be callable (PIL image -> tensor), got {transform!r}")
        self.records = list(records)
        self.transform = transform
        self.bad_images: list[str] = []
        self._bad: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict | None:
        record = self.records[index]
        try:
            image = load_rgb(record["image"])
        except CorruptImage as e:
            if e.path not in self._bad:
                self._bad.add(e.path)
                self.bad_images.append(e.path)
                log.warning("skipping bad image %s: %s", e.path, e.reason)
            return None
        return {"pixel_values": self.transform(image), "label": int(record["label"]), "index": int(index)}


def collate_skip_bad(batch):
    """Collate dataset items, dropping None (bad images); None when every item was bad.

    Tensors are stacked, ints become a LongTensor, floats a FloatTensor, anything else a list.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return None
    out: dict = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, (bool, int, np.integer)):
            out[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        elif isinstance(first, (float, np.floating)):
            out[key] = torch.tensor([float(v) for v in values], dtype=torch.float32)
        else:
            out[key] = values
    return out


def cap_per_emotion(records: list[dict], cap: int | None) -> list[dict]:
    """At most `cap` records, taken round-robin over emotions so every emotion stays represented."""
    if cap is None or len(records) <= cap:
        return records
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["emotion"], []).append(r)
    queues = [list(g) for g in groups.values()]
    out: list[dict] = []
    while len(out) < cap:
        for queue in queues:
            if queue and len(out) < cap:
                out.append(queue.pop(0))
    return out
