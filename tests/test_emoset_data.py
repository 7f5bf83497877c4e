"""EmoSet vocabulary, synthetic EmoSet writer and the official-layout reader."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from emocli.data import emoset_vocab as vocab
from emocli.data.emoset import (
    CorruptImage,
    EmoSetImages,
    EmoSetRelease,
    collate_skip_bad,
    load_rgb,
)
from emocli.data.synth import PROFILES, synth_emoset
from emocli.data.transforms import image_transform
from emocli.emotions import EMOSET
from emocli.errors import EmoError

REAL_INFO = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoset-official" / "info.json"
RECORD_KEYS = {"id", "emotion", "label", "image", "split", "scene", "objects", "facial_expression",
               "human_action", "brightness", "colorfulness"}
FAULTS = {"corrupt": 2, "grayscale": 2, "rgba": 2}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return synth_emoset(tmp_path_factory.mktemp("clean") / "EmoSet", 160, seed=3)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Path:
    return synth_emoset(tmp_path_factory.mktemp("faulty"), 48, seed=1, **FAULTS)


def _split(root: Path, split: str) -> list:
    return json.loads((root / f"{split}.json").read_text())


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# --- vocabulary -----------------------------------------------------------------------------------

def test_vocab_sizes_and_exact_names():
    sizes = {attr: len(v) for attr, v in vocab.VOCABS.items()}
    assert sizes == {"emotion": 8, "brightness": 11, "colorfulness": 11, "scene": 254, "object": 409,
                     "facial_expression": 6, "human_action": 264}
    assert vocab.EMOTION == EMOSET.labels
    assert "bakery/shop" in vocab.SCENE and "boxing " in vocab.HUMAN_ACTION
    assert "Kitchen & dining room table" in vocab.OBJECT
    assert vocab.BRIGHTNESS == tuple(f"{k / 10:.1f}" for k in range(11)) == vocab.COLORFULNESS
    for v in vocab.VOCABS.values():
        assert len(set(v)) == len(v)


def test_info_json_structure():
    info = vocab.info_json()
    assert list(info) == ["emotion", "brightness", "colorfulness", "scene", "object", "facial_expression",
                          "human_action"]
    assert info["brightness"]["label2idx"]["0.3"] == 3
    assert info["brightness"]["idx2label"]["3"] == 0.3 and isinstance(info["colorfulness"]["idx2label"]["10"], float)
    assert info["scene"]["idx2label"]["17"] == "bakery/shop" and info["scene"]["label2idx"]["bakery/shop"] == 17
    assert info["emotion"]["label2idx"] == {e: i for i, e in enumerate(EMOSET.labels)}


@pytest.mark.skipif(not REAL_INFO.is_file(), reason=f"the real EmoSet info.json is not at {REAL_INFO}")
def test_info_json_equals_the_real_file():
    raw = REAL_INFO.read_text()
    assert vocab.info_json() == json.loads(raw)
    assert json.dumps(vocab.info_json(), indent=2) == raw  # byte for byte, as synth_emoset writes it


# --- synthetic writer -----------------------------------------------------------------------------

def test_synth_layout_matches_the_official_schema(clean):
    assert {p.name for p in clean.iterdir()} == {"info.json", "train.json", "val.json", "test.json", "image",
                                                 "annotation"}
    assert json.loads((clean / "info.json").read_text()) == vocab.info_json()
    entries = [e for s in ("train", "val", "test") for e in _split(clean, s)]
    assert len(entries) == 160
    assert len({e[1] for e in entries}) == 160
    present = Counter()
    for entry in entries:
        assert isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, str) for x in entry)
        emotion, image_id, image_rel, ann_rel = entry
        assert emotion in EMOSET.labels
        assert re.fullmatch(rf"{emotion}_\d{{5}}", image_id)
        assert image_rel == f"image/{emotion}/{image_id}.jpg"
        assert ann_rel == f"annotation/{emotion}/{image_id}.json"
        with Image.open(clean / image_rel) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))
        ann = json.loads((clean / ann_rel).read_text())
        assert set(ann) <= set(vocab.ANNOTATION_KEYS)
        present.update(ann.keys())
        if "scene" in ann:
            assert ann["scene"] in vocab.SCENE
        if "object" in ann:
            objs = ann["object"]
            assert isinstance(objs, list) and objs and len(set(objs)) == len(objs)
            assert all(o in vocab.OBJECT for o in objs)
        if "facial_expression" in ann:
            assert ann["facial_expression"] in vocab.FACIAL_EXPRESSION
        if "human_action" in ann:
            assert ann["human_action"] in vocab.HUMAN_ACTION
        for key in ("brightness", "colorfulness"):
            if key in ann:
                assert isinstance(ann[key], float) and str(ann[key]) in vocab.VOCABS[key]
    # every key is present in most annotations and absent from some
    for key in vocab.ANNOTATION_KEYS:
        assert 0.3 * len(entries) < present[key] < len(entries), key
    # no stray files: one image and one annotation per entry
    assert sum(1 for _ in (clean / "image").rglob("*.jpg")) == 160
    assert sum(1 for _ in (clean / "annotation").rglob("*.json")) == 160


def test_synth_attributes_correlate_with_emotion(clean):
    scene_hits, scene_total, bright = Counter(), Counter(), {e: [] for e in EMOSET.labels}
    for emotion, _, _, ann_rel in (e for s in ("train", "val", "test") for e in _split(clean, s)):
        ann = json.loads((clean / ann_rel).read_text())
        if "scene" in ann:
            scene_total[emotion] += 1
            scene_hits[emotion] += ann["scene"] in PROFILES[emotion]["scenes"]
        if "brightness" in ann:
            bright[emotion].append(ann["brightness"])
    for emotion in EMOSET.labels:
        assert scene_hits[emotion] / scene_total[emotion] > 0.4, emotion
    pos = np.mean([b for e in EMOSET.labels[:4] for b in bright[e]])
    neg = np.mean([b for e in EMOSET.labels[4:] for b in bright[e]])
    assert pos > neg + 0.15


def test_synth_images_separate_emotions(clean):
    """A nearest-centroid classifier on 8x8 thumbnails: what a tiny model can learn, it should."""
    def feats(split):
        xs, ys = [], []
        for emotion, _, image_rel, _ in _split(clean, split):
            with Image.open(clean / image_rel) as im:
                xs.append(np.asarray(im.resize((8, 8)), dtype=np.float32).ravel())
            ys.append(EMOSET.labels.index(emotion))
        return np.stack(xs), np.array(ys)

    x_train, y_train = feats("train")
    x_test, y_test = np.concatenate([feats("val")[0], feats("test")[0]]), np.concatenate([feats("val")[1],
                                                                                          feats("test")[1]])
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(8)])
    pred = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y_test).mean() > 0.6


def test_synth_is_deterministic_by_seed(tmp_path):
    a = synth_emoset(tmp_path / "a", 40, seed=7, **FAULTS)
    b = synth_emoset(tmp_path / "b", 40, seed=7, **FAULTS)
    c = synth_emoset(tmp_path / "c", 40, seed=8, **FAULTS)
    assert _tree_hash(a) == _tree_hash(b)
    assert _tree_hash(a) != _tree_hash(c)


@pytest.mark.parametrize("n", [8, 13, 24, 200])
def test_synth_every_emotion_and_stratified_splits(tmp_path, n):
    root = synth_emoset(tmp_path / "d", n, seed=0)
    per_split = {s: Counter(e[0] for e in _split(root, s)) for s in ("train", "val", "test")}
    total = sum(per_split.values(), Counter())
    assert sum(total.values()) == n
    assert set(total) == set(EMOSET.labels)
    assert max(total.values()) - min(total.values()) <= 1  # balanced over emotions
    if n >= 24:  # three images per emotion: every split has every emotion
        for split, counts in per_split.items():
            assert set(counts) == set(EMOSET.labels), split
    else:
        assert set(per_split["train"]) == set(EMOSET.labels)
    if n == 200:
        assert sum(per_split["train"].values()) == 160
        assert {sum(per_split[s].values()) for s in ("val", "test")} == {20}


def test_synth_split_fractions_and_empty_splits(tmp_path):
    root = synth_emoset(tmp_path / "d", 16, seed=0, splits=(1, 0, 0))
    assert len(_split(root, "train")) == 16 and _split(root, "val") == [] and _split(root, "test") == []


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=7), ["n >= 8", "7"]),
    (dict(n=8, corrupt=5, rgba=4), ["exceeds", "8"]),
    (dict(n=8, splits=(0.5, 0.5)), ["splits"]),
    (dict(n=8, splits=(0, 0, 0)), ["splits"]),
    (dict(n=8, grayscale=-1), ["grayscale"]),
])
def test_synth_rejects_bad_arguments(tmp_path, kwargs, words):
    with pytest.raises(EmoError) as err:
        synth_emoset(tmp_path / "x", **kwargs)
    for word in words:
        assert word in str(err.value)


def test_synth_is_fast(tmp_path):
    start = time.perf_counter()
    synth_emoset(tmp_path / "fast", 200, seed=0)
    assert time.perf_counter() - start < 5.0


# --- reader ---------------------------------------------------------------------------------------

def test_reader_round_trip(clean):
    release = EmoSetRelease(clean)
    assert release.splits == ("train", "val", "test")
    records = release.all_records()
    assert len(records) == 160
    assert [r["split"] for r in records] == (["train"] * 128 + ["val"] * 16 + ["test"] * 16)
    for r, entry in zip(records, [e for s in release.splits for e in _split(clean, s)]):
        assert set(r) == RECORD_KEYS
        assert r["id"] == entry[1] and r["emotion"] == entry[0]
        assert r["label"] == EMOSET.index(r["emotion"])
        image = Path(r["image"])
        assert image.is_absolute() and image.is_file()
        assert image.parent.name == r["emotion"] and image.stem == r["id"]
        ann = json.loads((clean / entry[3]).read_text())
        assert r["scene"] == ann.get("scene")
        assert r["objects"] == ann.get("object", [])
        assert r["facial_expression"] == ann.get("facial_expression")
        assert r["human_action"] == ann.get("human_action")
        assert r["brightness"] == ann.get("brightness") and r["colorfulness"] == ann.get("colorfulness")
    assert release.missing_annotations == [] and release.bad_annotations == []

    bare = release.records("val", annotations=False)
    assert len(bare) == 16 and all(r["scene"] is None and r["objects"] == [] for r in bare)
    # records are copies: editing one does not change the next call's
    release.records("train")[0]["objects"].append("x")
    assert "x" not in release.records("train")[0]["objects"]
    with pytest.raises(EmoError, match="no 'dev' split"):
        release.records("dev")


def test_reader_counts_missing_and_bad_annotations(tmp_path, caplog):
    root = synth_emoset(tmp_path / "d", 16, seed=0, splits=(1, 0, 0))
    entries = _split(root, "train")
    (root / entries[0][3]).unlink()
    (root / entries[1][3]).write_text("{not json")
    for split in ("val", "test"):
        (root / f"{split}.json").unlink()
    release = EmoSetRelease(root)
    assert release.splits == ("train",)
    with caplog.at_level(logging.WARNING, logger="emocli"):
        records = release.records("train")
    assert len(records) == 16
    assert release.missing_annotations == [str(root.resolve() / entries[0][3])]
    assert release.bad_annotations == [str(root.resolve() / entries[1][3])]
    for r in records[:2]:
        assert r["scene"] is None and r["objects"] == [] and r["brightness"] is None
    assert "1 of 16 annotation files missing" in caplog.text


def test_not_an_emoset_release(tmp_path):
    with pytest.raises(EmoError) as err:
        EmoSetRelease(tmp_path)
    assert str(err.value) == f"{tmp_path.resolve()} is not an EmoSet release: missing info.json, train.json"
    (tmp_path / "info.json").write_text(json.dumps(vocab.info_json()))
    with pytest.raises(EmoError, match=r"missing train\.json$"):
        EmoSetRelease(tmp_path)
    with pytest.raises(EmoError, match="does not exist"):
        EmoSetRelease(tmp_path / "nope")


def test_unknown_emotion_in_a_split_file(tmp_path):
    root = synth_emoset(tmp_path / "d", 8, seed=0)
    entries = _split(root, "train")
    entries[2] = ["joy", "joy_00000", "image/joy/joy_00000.jpg", "annotation/joy/joy_00000.json"]
    (root / "train.json").write_text(json.dumps(entries))
    with pytest.raises(EmoError) as err:
        EmoSetRelease(root).records("train")
    msg = str(err.value)
    assert str(root.resolve() / "train.json") in msg and "entry 2" in msg and "'joy'" in msg
    assert "valid: amusement" in msg

    (root / "train.json").write_text(json.dumps([["fear", "fear_00000"]]))
    with pytest.raises(EmoError, match="entry 0 .* is not \\[emotion, image_id, image, annotation\\]"):
        EmoSetRelease(root).records("train")


def test_load_rgb_converts_grayscale_and_rgba(faulty):
    kinds = Counter()
    for r in EmoSetRelease(faulty).all_records(annotations=False):
        try:
            with Image.open(r["image"]) as raw:
                raw.load()
                fmt, mode = raw.format, raw.mode
        except OSError:
            kinds["corrupt"] += 1
            continue
        img = load_rgb(r["image"])
        assert img.mode == "RGB" and img.size == (64, 64)
        if mode == "L":
            kinds["grayscale"] += 1
            arr = np.asarray(img)
            assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
        elif mode == "RGBA":
            kinds["rgba"] += 1
            assert fmt == "PNG" and r["image"].endswith(".jpg")
            assert (np.asarray(img)[:8] == 255).all()  # the transparent band composited on white
        else:
            assert (fmt, mode) == ("JPEG", "RGB")
    assert dict(kinds) == FAULTS


def test_load_rgb_other_modes(tmp_path):
    cases = {
        "p.png": Image.new("P", (8, 8), 3),
        "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
        "la.png": Image.new("LA", (8, 8), (10, 0)),
        "i16.png": Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = load_rgb(tmp_path / name)
        assert out.mode == "RGB" and out.size == (8, 8), name
    assert np.asarray(load_rgb(tmp_path / "la.png")).min() == 255  # fully transparent -> white
    assert np.asarray(load_rgb(tmp_path / "i16.png")).min() == 255


def test_corrupt_images_are_named_counted_and_skipped(faulty, caplog):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    records = EmoSetRelease(faulty).all_records(annotations=False)
    records.append(dict(records[0], image=str(faulty / "image" / "fear" / "gone.jpg")))
    ds = EmoSetImages(records, image_transform(32))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_skip_bad)
    with caplog.at_level(logging.WARNING, logger="emocli"):
        batches = [b for b in loader if b is not None]
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert len(seen) == len(records) - FAULTS["corrupt"] - 1
    assert len(ds.bad_images) == FAULTS["corrupt"] + 1 == len(set(ds.bad_images))
    assert ds.bad_images[-1].endswith("gone.jpg")
    for path in ds.bad_images:
        assert path in caplog.text
        with pytest.raises(CorruptImage) as err:
            load_rgb(path)
        assert err.value.path == path and not isinstance(err.value, EmoError)
    for b in batches:
        assert b["pixel_values"].shape[1:] == (3, 32, 32) and b["pixel_values"].dtype == torch.float32
        assert b["label"].tolist() == [records[i]["label"] for i in b["index"].tolist()]
    # a second pass does not re-count or re-log
    for i in range(len(ds)):
        ds[i]
    assert len(ds.bad_images) == FAULTS["corrupt"] + 1


def test_collate_skip_bad():
    assert collate_skip_bad([None, None]) is None
    item = {"pixel_values": torch.zeros(3, 4, 4), "label": 2, "index": 5}
    out = collate_skip_bad([None, item, dict(item, label=3, index=6)])
    assert out["pixel_values"].shape == (2, 3, 4, 4)
    assert out["label"].tolist() == [2, 3] and out["index"].tolist() == [5, 6]


# --- transform ------------------------------------------------------------------------------------

def test_image_transform_resize_crop_normalise():
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    out = image_transform(32)(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))
    out = image_transform(40, crop=24, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(Image.new("L", (30, 90), 0))
    assert out.shape == (3, 24, 24) and float(out.abs().max()) == 0.0


def test_image_transform_flip_only_when_training():
    arr = np.zeros((16, 16, 3), dtype=np.uint8)
    arr[:, :8] = 255  # left half white
    img = Image.fromarray(arr)

    def left_white(t):
        return bool(t[0, :, :4].mean() > 0)

    random.seed(0)
    train = image_transform(16, train=True, flip=True)
    flips = [not left_white(train(img)) for _ in range(40)]
    assert 5 < sum(flips) < 35
    evaluation = image_transform(16, train=False, flip=True)
    assert all(left_white(evaluation(img)) for _ in range(10))
