"""ArtEmis (v1.0 / v2.0) annotations + WikiArt images -> the prepared format SEVLM trains on (docs/data.md).

Accepted CSVs (one row per annotation; any other columns are ignored):
- ArtEmis's `artemis_preprocessed.csv` (columns art_style, painting, emotion, utterance, split): its `split`
  column is kept, so splits match the literature; rows of the `rest` split (artworks with >= 41 annotations)
  are dropped. `utterance_spelled` (the spell-checked text) is used when present.
- the raw release `artemis_dataset_release_v0.csv` (art_style, painting, emotion, utterance, repetition) and
  the v2 files (`Contrastive.csv`, the "combined" CSV with a `version` column): ArtEmis's deep-net rules are
  applied here: artworks with repetition >= 41 dropped, utterances shorter than 5 tokens or longer than the
  95th percentile dropped, then an 85/5/10 train/val/test split by artwork with a fixed seed. ArtEmis's
  spell-check step needs GloVe and SymSpell dictionaries (downloads) and is not applied.

Output folder (written to a temporary folder and renamed when complete):
    prepare.json                       manifest: source, format, rules, counts, missing/corrupt images by path
    {train,val,test}.jsonl             one line per artwork (see `ARTWORK_FIELDS`)
    train_contrastive.jsonl            train artworks whose annotations hold >= 2 distinct emotions
    image-emotion-histogram.csv        ArtEmis's per-artwork 9-bin vote counts (art_style, painting, histogram)
    coco/{val,test}_references.json    COCO-caption reference files (one annotation per human explanation)
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emocli.data.prepare import check_output_folder, staged_folder, write_json, write_jsonl
from emocli.emotions import ARTEMIS
from emocli.errors import EmoError

log = logging.getLogger("emocli")

MANIFEST = "prepare.json"
SPLITS = ("train", "val", "test")
BASE_COLUMNS = ("art_style", "painting", "emotion", "utterance")
ARTWORK_FIELDS = ("image_id", "image", "art_style", "painting", "emotions", "explanations",
                  "emotion_histogram", "emotion_distribution")
MAX_REPETITION = 40  # ArtEmis: artworks annotated by >= 41 people go to a separate `rest` split
MIN_TOKENS = 5
MAX_LENGTH_PERCENTILE = 95
SPLIT_FRACTIONS = (0.85, 0.05, 0.10)
IMAGE_SUFFIX = ".jpg"


def tokens_of(text: str) -> list[str]:
    """ArtEmis-like word tokens (lower-case words and apostrophes) for the length rule."""
    return re.findall(r"[a-z0-9']+", text.lower())


def image_id_of(art_style: str, painting: str) -> str:
    """A stable integer-like id per artwork (COCO evaluation wants int()-able ids)."""
    digest = hashlib.sha1(f"{art_style}/{painting}".encode()).hexdigest()
    return str(int(digest[:15], 16))


def read_annotations(path: Path) -> tuple[list[dict], str]:
    """Rows of an ArtEmis CSV and its format ("preprocessed" or "raw"); bad files are one-line errors."""
    if not path.is_file():
        raise EmoError(f"--source {path} is not a file; pass ArtEmis's artemis_preprocessed.csv or the "
                       f"release CSV (artemis_dataset_release_v0.csv)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in BASE_COLUMNS if c not in columns]
            if missing:
                raise EmoError(f"{path} lacks ArtEmis's column(s) {', '.join(missing)}; an ArtEmis CSV has "
                               f"{', '.join(BASE_COLUMNS)} plus `split` (preprocessed) or `repetition` (release)")
            if "split" not in columns and "repetition" not in columns:
                raise EmoError(f"{path} has neither `split` (artemis_preprocessed.csv) nor `repetition` "
                               f"(release CSV); one of them is needed")
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as e:
        raise EmoError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise EmoError(f"{path} is not a readable CSV: {e}") from None
    fmt = "preprocessed" if "split" in columns else "raw"
    for i, row in enumerate(rows, start=2):
        emotion = row["emotion"].lower()
        if emotion not in ARTEMIS:
            raise EmoError(f"{path} line {i}: emotion {row['emotion']!r} is not one of ArtEmis's "
                           f"{', '.join(ARTEMIS.labels)}")
        row["emotion"] = emotion
        if fmt == "preprocessed" and row.get("utterance_spelled"):
            row["utterance"] = row["utterance_spelled"]
    return rows, fmt


def _length_filter(rows: list[dict]) -> tuple[list[dict], dict]:
    lengths = sorted(len(tokens_of(r["utterance"])) for r in rows)
    if not lengths:
        return rows, {}
    cut = lengths[min(len(lengths) - 1, int(round(MAX_LENGTH_PERCENTILE / 100 * (len(lengths) - 1))))]
    kept = [r for r in rows if MIN_TOKENS <= len(tokens_of(r["utterance"])) <= cut]
    return kept, {"max_tokens": cut, "min_tokens": MIN_TOKENS, "dropped_by_length": len(rows) - len(kept)}


def _split_raw(rows: list[dict], seed: int) -> tuple[list[dict], dict]:
    """ArtEmis's deep-net rules on a release CSV: repetition, utterance length, 85/5/10 split by artwork."""
    def repetition(row):
        try:
            return int(float(row["repetition"]))
        except (KeyError, ValueError):
            return 0

    kept = [r for r in rows if repetition(r) <= MAX_REPETITION]
    rules = {"dropped_by_repetition": len(rows) - len(kept)}
    kept, length_rules = _length_filter(kept)
    rules.update(length_rules)
    artworks = sorted({(r["art_style"], r["painting"]) for r in kept})
    random.Random(seed).shuffle(artworks)
    n_train = int(round(SPLIT_FRACTIONS[0] * len(artworks)))
    n_val = int(round(SPLIT_FRACTIONS[1] * len(artworks)))
    split_of = {a: "train" if i < n_train else "val" if i < n_train + n_val else "test"
                for i, a in enumerate(artworks)}
    for r in kept:
        r["split"] = split_of[(r["art_style"], r["painting"])]
    return kept, rules


def _escaped(name: str) -> str:
    """WikiArt's on-disk spelling of non-ASCII characters: `#U` + 4 hex digits."""
    return "".join(c if ord(c) < 128 else f"#U{ord(c):04x}" for c in name)


def resolve_image(images: Path, art_style: str, painting: str) -> Path | None:
    """The image file of an artwork; names with combining characters are tried as NFC, NFD and #U-escaped."""
    folder = images / art_style
    candidates = []
    for form in (painting, unicodedata.normalize("NFC", painting), unicodedata.normalize("NFD", painting)):
        for name in (form, _escaped(form), _escaped(form).replace("#U", "#u")):
            if name not in candidates:
                candidates.append(name)
    for name in candidates:
        path = folder / f"{name}{IMAGE_SUFFIX}"
        if path.is_file():
            return path
    return None


def _check_image(path: Path) -> str | None:
    from emocli.data.emoset import CorruptImage, load_rgb

    try:
        load_rgb(path)
    except CorruptImage as e:
        return e.reason
    return None


def prepare_artemis(source, images, out, seed: int = 2021, overwrite: bool = False,
                    workers: int | None = None) -> Path:
    source, images, out = Path(source), Path(images), Path(out)
    if not images.is_dir():
        raise EmoError(f"--images {images} is not a folder; pass the WikiArt folder (<style>/<painting>.jpg), "
                       f"e.g. wikiart_rescaled_max_size_to_600px_same_aspect_ratio")
    check_output_folder(out, overwrite, None)
    rows, fmt = read_annotations(source)
    if not rows:
        raise EmoError(f"{source} has no annotation rows")
    if fmt == "preprocessed":
        rules = {"dropped_rest_split": sum(r["split"] == "rest" for r in rows)}
        rows = [r for r in rows if r["split"] != "rest"]
        unknown = sorted({r["split"] for r in rows} - set(SPLITS))
        if unknown:
            raise EmoError(f"{source}: split {unknown[0]!r} is not one of {', '.join(SPLITS)} (or rest)")
    else:
        rows, rules = _split_raw(rows, seed)

    by_artwork: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_artwork[(r["art_style"], r["painting"])].append(r)
    keys = sorted(by_artwork)
    with ThreadPoolExecutor(max_workers=workers or 4) as pool:
        paths = list(pool.map(lambda k: resolve_image(images, *k), keys))
        reasons = list(pool.map(lambda p: None if p is None else _check_image(p), paths))
    missing, corrupt = [], {}
    artworks = {s: [] for s in SPLITS}
    histogram_rows = []
    for key, path, reason in zip(keys, paths, reasons):
        art_style, painting = key
        if path is None:
            missing.append(f"{art_style}/{painting}{IMAGE_SUFFIX}")
            continue
        if reason is not None:
            corrupt[str(path)] = reason
            continue
        annotations = by_artwork[key]
        counts = Counter(a["emotion"] for a in annotations)
        histogram = [counts.get(e, 0) for e in ARTEMIS.labels]
        total = sum(histogram)
        split = annotations[0]["split"]
        artworks[split].append({
            "image_id": image_id_of(art_style, painting),
            "image": path.relative_to(images).as_posix(),
            "art_style": art_style, "painting": painting,
            "emotions": [a["emotion"] for a in annotations],
            "explanations": [a["utterance"] for a in annotations],
            "emotion_histogram": histogram,
            "emotion_distribution": [h / total for h in histogram],
        })
        histogram_rows.append((art_style, painting, json.dumps(histogram)))
    for path in missing[:5]:
        log.warning("missing image: %s", path)
    for path, reason in list(corrupt.items())[:5]:
        log.warning("corrupt image: %s (%s)", path, reason)
    if not any(artworks.values()):
        raise EmoError(f"none of the {len(keys)} artworks of {source} has a readable image under {images} "
                       f"(missing {len(missing)}, corrupt {len(corrupt)}); is --images the WikiArt folder?")

    with staged_folder(out) as stage:
        for split, items in artworks.items():
            write_jsonl(stage / f"{split}.jsonl", items)
        contrastive = [a for a in artworks["train"] if len(set(a["emotions"])) >= 2]
        write_jsonl(stage / "train_contrastive.jsonl", contrastive)
        with (stage / "image-emotion-histogram.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["art_style", "painting", "emotion_histogram"])
            writer.writerows(histogram_rows)
        for split in ("val", "test"):
            write_json(stage / "coco" / f"{split}_references.json", coco_references(artworks[split]), indent=None)
        write_json(stage / MANIFEST, {
            "dataset": "artemis", "source": str(source.resolve()), "source_format": fmt,
            "images": str(images.resolve()), "seed": seed, "rules": rules,
            "counts": {"artworks": {s: len(v) for s, v in artworks.items()},
                       "annotations": {s: sum(len(a["emotions"]) for a in v) for s, v in artworks.items()},
                       "train_contrastive": len(contrastive)},
            "emotions": list(ARTEMIS.labels),
            "missing_image_count": len(missing), "missing_images": missing,
            "corrupt_image_count": len(corrupt), "corrupt_images": corrupt,
        })
    return out


def coco_references(artworks: list[dict]) -> dict:
    """The COCO caption format NLX-GPT/SEVLM score against: one annotation per human explanation."""
    images, annotations = [], []
    for artwork in artworks:
        images.append({"id": int(artwork["image_id"])})
        for text in artwork["explanations"]:
            annotations.append({"image_id": int(artwork["image_id"]), "id": len(annotations), "caption": text})
    return {"info": {}, "licenses": [], "type": "captions", "images": images, "annotations": annotations}


class PreparedArtEmis:
    """Read a folder written by `prepare_artemis`; image paths are resolved against the manifest's `images`."""

    def __init__(self, path, images: str | Path | None = None):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise EmoError(f"{self.path} is not a prepared ArtEmis folder (no {MANIFEST}); make one with "
                           f"`emo data prepare artemis`")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("dataset") != "artemis":
            raise EmoError(f"{self.path} was prepared for {self.manifest.get('dataset', 'another dataset')!r}, "
                           f"not ArtEmis")
        self.images = Path(images) if images else Path(self.manifest["images"])

    def artworks(self, split: str) -> list[dict]:
        name = {"contrastive": "train_contrastive"}.get(split, split)
        path = self.path / f"{name}.jsonl"
        if not path.is_file():
            raise EmoError(f"{self.path} has no {name}.jsonl; splits: {', '.join(SPLITS)}, contrastive")
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for item in items:
            item["path"] = str(self.images / item["image"])
        return items


def majority_emotion(histogram: list[int]) -> str | None:
    """The strict-majority emotion (more than half of the votes), the paper's accuracy rule; else None."""
    total = sum(histogram)
    best = max(range(len(histogram)), key=histogram.__getitem__)
    return ARTEMIS.labels[best] if total and histogram[best] / total > 0.5 else None
