"""`emo data prepare / alpha / import-emogen / stats` on synthetic and hand-made EmoSet releases."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emocli.data.alpha import carried_attributes
from emocli.data.emoset import EmoSetRelease
from emocli.data.emoset_vocab import info_json
from emocli.data.prepare import attribute_row, balance, prepare_emoset, primary_attribute
from emocli.data.synth import synth_emoset
from emocli.emotions import EMOSET
from emocli.errors import EmoError
from tests.conftest import run_emo, shared_path

PREPARED_FILES = {"prepare.json", "records.jsonl", "attributes.jsonl", "attribute_counts.json",
                  "attribute_vocab.json", "balanced/scene.json", "balanced/object.json"}
RECORD_KEYS = ["id", "emotion", "label", "image", "split", "scene", "objects", "facial_expression",
               "human_action", "brightness", "colorfulness"]
ATTRIBUTE_KEYS = ["id", "emotion", "label", "split", "property", "attribute", "scene", "object"]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(path: Path):
    return json.loads(path.read_text())


def _one_line_error(out, *words):
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in out.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@contextmanager
def _warnings():
    """Collect the "emocli" logger's warnings (works whether or not it propagates to the root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("emocli")
    handler, old_level = Keep(level=logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(min(old_level or logging.WARNING, logging.WARNING))
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Path:
    """A synthetic release of 96 images, 2 of them truncated JPEGs."""
    return synth_emoset(tmp_path_factory.mktemp("faulty") / "EmoSet", 96, seed=5, corrupt=2)


@pytest.fixture(scope="module")
def prepared_cli(faulty, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    result = run_emo("data", "prepare", "emoset", "--source", str(faulty), "--out", str(out), "--seed", "3")
    return out, result


# The hand-made release: (emotion, id, split, annotation or None when the image file is missing).
HAND = [
    ("amusement", "amusement_00001", "train", {"scene": "amusement_park", "object": ["Toy"]}),
    ("amusement", "amusement_00002", "train", {"scene": "amusement_park"}),
    ("amusement", "amusement_00003", "train", {"object": ["Baked goods", "Toy"]}),
    ("awe", "awe_00001", "train", {"scene": "mountain"}),
    ("awe", "awe_00002", "train", {"scene": "mountain", "object": ["Tree"]}),
    ("awe", "awe_00003", "train", {"scene": "amusement_park"}),
    ("awe", "awe_00004", "train", {"object": ["Baked goods"]}),
    ("fear", "fear_00001", "train", {"scene": "cemetery"}),
    ("fear", "fear_00002", "train", {"object": ["Spider"]}),
    ("fear", "fear_00003", "train", {"object": ["Spider"], "scene": ""}),
    ("fear", "fear_00004", "train", {"object": ["Spider"]}),
    ("sadness", "sadness_00001", "train", {"brightness": 0.2}),
    ("sadness", "sadness_00002", "val", {"scene": "cemetery"}),
    ("anger", "anger_00001", "val", None),  # the image file is missing
]


def _write_hand_release(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "info.json").write_text(json.dumps(info_json()))
    splits: dict[str, list] = {"train": [], "val": []}
    for k, (emotion, image_id, split, annotation) in enumerate(HAND):
        image_rel, ann_rel = f"image/{emotion}/{image_id}.jpg", f"annotation/{emotion}/{image_id}.json"
        (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / ann_rel).parent.mkdir(parents=True, exist_ok=True)
        if annotation is not None:
            Image.new("RGB", (16, 12), (10 * k, 100, 200)).save(root / image_rel, format="JPEG")
        (root / ann_rel).write_text(json.dumps(annotation or {}))
        splits[split].append([emotion, image_id, image_rel, ann_rel])
    for split, entries in splits.items():
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    return _write_hand_release(tmp_path_factory.mktemp("hand") / "release")


# --- preparing a release ---------------------------------------------------------------------------

def test_cli_prepare_names_and_counts_bad_images(prepared_cli, faulty):
    out, result = prepared_cli
    assert result.returncode == 0, result.stderr
    manifest = _json(out / "prepare.json")
    assert manifest["bad_image_count"] == 2 and len(manifest["bad_images"]) == 2
    for path in manifest["bad_images"]:
        assert Path(path).is_file() and str(faulty) in path
        assert path in result.stderr  # named in a warning
        assert "truncated" in manifest["bad_image_reasons"][path]
    assert "2 bad images" in result.stdout
    assert manifest["counts"]["total"] == 94
    release = EmoSetRelease(faulty)
    assert sum(manifest["counts"]["per_split"].values()) == 94
    assert manifest["counts"]["per_split"]["train"] == len(release.records("train")) - sum(
        1 for p in manifest["bad_images"] if any(r["image"] == p for r in release.records("train")))
    assert sum(manifest["counts"]["per_emotion"].values()) == 94
    assert not list(out.parent.glob(".*partial*"))  # the temporary folder was renamed


def test_prepared_files_and_columns(prepared_cli, faulty):
    out, _ = prepared_cli
    assert _files(out) == PREPARED_FILES
    manifest = _json(out / "prepare.json")
    assert manifest["format"] == "emo-prepared-emoset/1"
    assert manifest["source"] == str(faulty.resolve()) and manifest["source_kind"] == "emoset-release"
    assert manifest["seed"] == 3 and manifest["missing_fields"] == [] and manifest["emocli_version"]
    assert manifest["splits"] == ["train", "val", "test"] and manifest["attribute_splits"] == ["train"]
    assert set(manifest["counts"]) == {"total", "per_split", "per_emotion", "per_split_emotion"}
    records = _jsonl(out / "records.jsonl")
    assert len(records) == 94
    assert all(list(r) == RECORD_KEYS for r in records)
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in records)
    assert not {r["image"] for r in records} & set(manifest["bad_images"])
    assert all(EMOSET.labels[r["label"]] == r["emotion"] for r in records)
    rows = _jsonl(out / "attributes.jsonl")
    assert all(list(r) == ATTRIBUTE_KEYS for r in rows)
    assert {r["property"] for r in rows} <= {"scene", "object"}
    counts = _json(out / "attribute_counts.json")
    assert set(counts) == {"scene", "object"}
    train_rows = [r for r in rows if r["split"] == "train"]
    for prop in ("scene", "object"):
        assert sum(sum(v) for v in counts[prop].values()) == sum(r["property"] == prop for r in train_rows)
        assert all(len(v) == 8 for v in counts[prop].values())
        ids = _json(out / "balanced" / f"{prop}.json")
        per = Counter(next(r["emotion"] for r in train_rows if r["id"] == i) for i in ids)
        assert len(set(per.values())) == 1  # every present emotion oversampled to the largest
        assert len(ids) == manifest["balanced"][prop]
    vocab = _json(out / "attribute_vocab.json")
    assert set(vocab) == {"rule", "per_emotion", "vocabulary"}
    assert set(vocab["per_emotion"]) == {"scene", "object"}
    assert all(list(v) == list(EMOSET.labels) for v in vocab["per_emotion"].values())
    listed = sorted({a for p in vocab["per_emotion"].values() for names in p.values() for a in names})
    assert vocab["vocabulary"] == listed and listed


def test_primary_attribute_rule(prepared_cli):
    assert primary_attribute({"scene": "amusement_park", "objects": ["Toy"]}) == ("scene", "amusement_park")
    assert primary_attribute({"scene": None, "objects": ["Baked goods", "Toy"]}) == ("object", "baked_goods")
    assert primary_attribute({"scene": "", "objects": ["Alarm clock"]}) == ("object", "alarm_clock")
    assert primary_attribute({"scene": "Bamboo Forest", "objects": []}) == ("scene", "bamboo_forest")
    assert primary_attribute({"scene": None, "objects": []}) is None
    row = attribute_row({"id": "x", "emotion": "awe", "label": 1, "split": "train", "scene": "valley",
                         "objects": ["Mountain bike"]})
    assert row == {"id": "x", "emotion": "awe", "label": 1, "split": "train", "property": "scene",
                   "attribute": "valley", "scene": "valley", "object": "mountain_bike"}
    out, _ = prepared_cli
    rows = {r["id"]: r for r in _jsonl(out / "attributes.jsonl")}
    for record in _jsonl(out / "records.jsonl"):
        expected = attribute_row(record)
        assert rows.get(record["id"]) == expected
        if record["scene"]:
            assert rows[record["id"]]["property"] == "scene"
        elif record["objects"]:
            assert rows[record["id"]]["attribute"] == record["objects"][0].lower().replace(" ", "_")


def test_hand_made_release_exact_counts(hand, tmp_path):
    from emocli.data.alpha import compute_alpha

    out = prepare_emoset(hand, tmp_path / "p", seed=0, min_attribute_images=2)
    manifest = _json(out / "prepare.json")
    assert manifest["counts"]["per_split"] == {"train": 12, "val": 1}
    assert manifest["bad_image_count"] == 1 and manifest["bad_images"][0].endswith("anger_00001.jpg")
    assert manifest["attribute_coverage"]["train"] == {"scene": 6, "object": 5, "none": 1}

    counts = _json(out / "attribute_counts.json")
    z = [0] * 8
    assert counts["scene"] == {"amusement_park": [2, 1] + z[2:], "cemetery": z[:6] + [1, 0],
                               "mountain": [0, 2] + z[2:]}
    assert counts["object"] == {"baked_goods": [1, 1] + z[2:], "spider": z[:6] + [3, 0]}

    emotion_of = {image_id: emotion for emotion, image_id, _, _ in HAND}
    scene = _json(out / "balanced" / "scene.json")
    obj = _json(out / "balanced" / "object.json")
    # scene: amusement 2, awe 3, fear 1 images -> each oversampled to 3
    assert Counter(emotion_of[i] for i in scene) == {"amusement": 3, "awe": 3, "fear": 3}
    assert Counter(scene)["fear_00001"] == 3
    assert sorted(Counter(scene)[i] for i in ("amusement_00001", "amusement_00002")) == [1, 2]
    assert all(Counter(scene)[i] == 1 for i in ("awe_00001", "awe_00002", "awe_00003"))
    # object: amusement 1, awe 1, fear 3 -> each to 3
    assert Counter(emotion_of[i] for i in obj) == {"amusement": 3, "awe": 3, "fear": 3}
    assert Counter(obj) == {"amusement_00003": 3, "awe_00004": 3, "fear_00002": 1, "fear_00003": 1,
                            "fear_00004": 1}

    vocab = _json(out / "attribute_vocab.json")
    assert vocab["per_emotion"]["scene"] == {**{e: [] for e in EMOSET.labels}, "amusement": ["amusement_park"],
                                             "awe": ["mountain"]}  # cemetery has 1 training image < 2
    assert vocab["per_emotion"]["object"] == {**{e: [] for e in EMOSET.labels}, "amusement": ["baked_goods"],
                                              "fear": ["spider"]}  # baked_goods: a tie -> amusement
    assert vocab["vocabulary"] == ["amusement_park", "baked_goods", "mountain", "spider"]

    alpha = _json(compute_alpha(out))
    assert alpha["method"] == "label-frequency" and alpha["classifier"] is None
    assert alpha["emotions"] == list(EMOSET.labels)
    assert alpha["scene"] == {"amusement_park": [2 / 3, 1 / 3] + z[2:], "cemetery": z[:6] + [1.0, 0],
                              "mountain": [0, 1.0] + z[2:]}
    # every image carrying an object counts, not only where it is the primary attribute: toy (amusement_00001
    # has a scene, amusement_00003 lists it second) and tree (awe_00002 has a scene) have rows too
    assert alpha["object"] == {"baked_goods": [0.5, 0.5] + z[2:], "spider": z[:6] + [1.0, 0],
                               "toy": [1.0] + z[1:], "tree": [0, 1.0] + z[2:]}
    assert alpha["scoring"] is None and "carrying" in alpha["definition"]
    assert not (out / "emotion_scores.jsonl").exists()


def test_balance_is_seeded_and_deterministic(hand, tmp_path):
    a = prepare_emoset(hand, tmp_path / "a", seed=7)
    b = prepare_emoset(hand, tmp_path / "b", seed=7)
    c = prepare_emoset(hand, tmp_path / "c", seed=8)
    for name in ("balanced/scene.json", "balanced/object.json", "attributes.jsonl", "records.jsonl",
                 "attribute_counts.json", "attribute_vocab.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    lists = [_json(p / "balanced" / "scene.json") for p in (a, c)]
    assert Counter(lists[0]).keys() == Counter(lists[1]).keys() and len(lists[0]) == len(lists[1])
    rows = [{"id": f"e{e}_{k}", "label": e, "property": "scene"} for e in range(8) for k in range(1 + 3 * e)]
    assert balance(rows, "scene", 1) != balance(rows, "scene", 2)  # the seed shapes order and extra copies
    assert balance(rows, "scene", 1) == balance(list(reversed(rows)), "scene", 1)  # not the source order
    assert len(balance(rows, "scene", 1)) == 8 * 22 and balance(rows, "object", 1) == []


# --- parquet and other sources ---------------------------------------------------------------------

def _parquet_from_release(release_root: Path, folder: Path, drop: tuple[str, ...] = ()) -> Path:
    import datasets

    datasets.disable_progress_bars()
    release = EmoSetRelease(release_root)
    names = sorted(EMOSET.labels)  # a ClassLabel in another order than EmoSet's: mapped by name
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=names),
        "image_id": datasets.Value("string"), "scene": datasets.Value("string"),
        "object": datasets.List(datasets.Value("string")),
        "facial_expression": datasets.Value("string"), "human_action": datasets.Value("string"),
        "brightness": datasets.Value("float64"), "colorfulness": datasets.Value("float64"),
    })
    for feature in drop:
        del features[feature]
    for split in release.splits:
        recs = release.records(split)
        columns = {
            "image": [{"bytes": Path(r["image"]).read_bytes(), "path": Path(r["image"]).name} for r in recs],
            "label": [names.index(r["emotion"]) for r in recs], "image_id": [r["id"] for r in recs],
            "scene": [r["scene"] for r in recs], "object": [r["objects"] for r in recs],
            "facial_expression": [r["facial_expression"] for r in recs],
            "human_action": [r["human_action"] for r in recs],
            "brightness": [r["brightness"] for r in recs], "colorfulness": [r["colorfulness"] for r in recs],
        }
        for feature in drop:
            del columns[feature]
        (folder / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=features).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_parquet_source_maps_onto_the_same_records(faulty, tmp_path):
    src = _parquet_from_release(faulty, tmp_path / "export")
    from_release = prepare_emoset(faulty, tmp_path / "r", seed=1)
    from_parquet = prepare_emoset(src, tmp_path / "q", seed=1)
    manifest = _json(from_parquet / "prepare.json")
    assert manifest["source_kind"] == "parquet" and manifest["missing_fields"] == []
    assert manifest["column_map"]["emotion"] == "label" and manifest["column_map"]["id"] == "image_id"
    assert manifest["bad_image_count"] == 2
    a, b = _jsonl(from_release / "records.jsonl"), _jsonl(from_parquet / "records.jsonl")
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k != "image"} == {k: v for k, v in y.items() if k != "image"}
        assert y["image"] == str(from_parquet / "images" / y["emotion"] / f"{y['id']}.jpg")
        assert Image.open(y["image"]).format == "JPEG"
        assert Path(y["image"]).read_bytes() == Path(x["image"]).read_bytes()  # the original bytes, no re-encode
    assert manifest["image_bytes"]["original"] == len(b) and manifest["image_bytes"]["reencoded"] == 0
    for name in ("attributes.jsonl", "attribute_counts.json", "attribute_vocab.json", "balanced/scene.json",
                 "balanced/object.json"):
        assert (from_release / name).read_bytes() == (from_parquet / name).read_bytes(), name


def test_parquet_without_optional_fields_warns(faulty, tmp_path):
    src = _parquet_from_release(faulty, tmp_path / "export", drop=("scene", "object", "human_action"))
    with _warnings() as caught:
        out = prepare_emoset(src, tmp_path / "q")
    manifest = _json(out / "prepare.json")
    assert manifest["missing_fields"] == ["scene", "objects", "human_action"]
    text = " ".join(r.getMessage() for r in caught)
    assert "scene, objects, human_action" in text and "empty" in text
    assert _jsonl(out / "attributes.jsonl") == [] and _json(out / "balanced" / "scene.json") == []
    assert _json(out / "attribute_counts.json") == {"scene": {}, "object": {}}
    assert manifest["counts"]["total"] == 94


def test_parquet_without_emotion_is_one_line_exit_2(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    ds = datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}], "scene": ["beach"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "scene": datasets.Value("string")}))
    ds.to_parquet(str(tmp_path / "x.parquet"))
    out = run_emo("data", "prepare", "emoset", "--source", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "o"))
    line = _one_line_error(out, "emotion", "image, scene")
    assert "columns" in line
    assert not (tmp_path / "o").exists()


def test_bad_sources_are_one_line_exit_2(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a dataset")
    cases = [
        (str(tmp_path / "missing"), ["does not exist", str(tmp_path / "missing")]),
        (str(tmp_path / "notes"), ["not an EmoSet source", "info.json"]),
        ("nobody-here/no-such-emoset", ["nobody-here/no-such-emoset", "local path"]),
    ]
    for source, words in cases:
        out = run_emo("data", "prepare", "emoset", "--source", source, "--out", str(tmp_path / "o"),
                      env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        _one_line_error(out, *words)
        assert not (tmp_path / "o").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_nothing_half_written_on_failure(hand, tmp_path):
    import datasets

    datasets.disable_progress_bars()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    n = 600  # past the first chunk of images, so some were already written when the bad row comes
    ds = datasets.Dataset.from_dict({
        "image": [{"bytes": buf.getvalue(), "path": None}] * n,
        "emotion": ["awe"] * (n - 1) + ["joy"],
    }, features=datasets.Features({"image": datasets.Image(), "emotion": datasets.Value("string")}))
    ds.to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(EmoError, match="joy"):
        prepare_emoset(tmp_path / "x.parquet", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]

    # an existing folder is refused without overwrite, replaced with it, and never half-replaced
    out = prepare_emoset(hand, tmp_path / "out")
    before = (out / "records.jsonl").read_bytes()
    with pytest.raises(EmoError, match="--overwrite"):
        prepare_emoset(hand, out, seed=5)
    with pytest.raises(EmoError, match="joy"):
        prepare_emoset(tmp_path / "x.parquet", out, overwrite=True)
    assert (out / "records.jsonl").read_bytes() == before and _json(out / "prepare.json")["seed"] == 0
    prepare_emoset(hand, out, seed=5, overwrite=True)
    assert _json(out / "prepare.json")["seed"] == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(EmoError, match="not a prepared folder"):
        prepare_emoset(hand, tmp_path / "other", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out", "x.parquet"]


def test_stats_cli(prepared_cli):
    out, _ = prepared_cli
    result = run_emo("data", "stats", str(out))
    assert result.returncode == 0, result.stderr
    for word in ("amusement", "sadness", "train", "val", "test", "scene", "object", "bad images: 2"):
        assert word in result.stdout


# --- alpha -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_classifier(faulty, tmp_path_factory) -> Path:
    """A random tiny ResNet emotion encoder (trained on nothing) whose predictions vary between images."""
    import torch
    from transformers import ResNetConfig, ResNetModel

    from emocli.data.emoset import load_rgb
    from emocli.data.transforms import image_transform
    from emocli.methods.emotion_encoder.model import EmotionEncoder

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    preprocess = {"resize": 32, "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    model = EmotionEncoder(ResNetModel(config), "resnet", config.to_dict(), feature_dim=16, emotion_dim=8,
                           preprocess=preprocess).eval()
    transform = image_transform(32, crop=32)
    images = torch.stack([transform(load_rgb(r["image"])) for r in EmoSetRelease(faulty).records("val")])
    with torch.no_grad():  # standardise the random representation so that the predictions spread out
        rep = model.represent(images)
        mean, std = rep.mean(0), rep.std(0) + 1e-6
        model.fc_1.weight.div_(std[:, None])
        model.fc_1.bias.sub_(mean).div_(std)
        model.head[-1].weight.mul_(4.0)
    folder = tmp_path_factory.mktemp("clf") / "model"
    model.save_pretrained(folder)
    return folder


def test_alpha_with_classifier_and_filter(faulty, tiny_classifier, tmp_path):
    from emocli.data.alpha import compute_alpha

    out = prepare_emoset(faulty, tmp_path / "p", seed=2)
    with pytest.raises(EmoError, match="needs --classifier"):
        compute_alpha(out, filter_threshold=0.5)
    with pytest.raises(EmoError, match="--scoring in-sample"):  # an encoder trained on the images it scores
        compute_alpha(out, classifier=tiny_classifier)
    alpha = _json(compute_alpha(out, classifier=tiny_classifier, batch_size=16, scoring="in-sample"))
    assert alpha["method"] == "classifier" and alpha["classifier"] == str(tiny_classifier.resolve())
    assert alpha["scoring"] == "in-sample"
    counts = _json(out / "attribute_counts.json")
    carried = {"scene": {}, "object": {}}
    for record in (r for r in _jsonl(out / "records.jsonl") if r["split"] == "train"):
        for prop, names in carried_attributes(record).items():
            for name in names:
                carried[prop].setdefault(name, []).append(record["id"])
    for prop in ("scene", "object"):
        assert set(alpha[prop]) == set(carried[prop]) >= set(counts[prop])
        for values in alpha[prop].values():
            assert len(values) == 8 and abs(sum(values) - 1.0) < 1e-6 and min(values) >= 0
    records = [r for r in _jsonl(out / "records.jsonl") if r["split"] == "train"]
    scores = _jsonl(out / "emotion_scores.jsonl")
    assert [s["id"] for s in scores] == [r["id"] for r in records]
    assert all(list(s) == ["id", "pred", "score", "label_prob"] for s in scores)
    assert all(s["pred"] in EMOSET.labels and s["label_prob"] <= s["score"] <= 1 for s in scores)
    assert len({s["pred"] for s in scores}) > 2
    # alpha is the mean probability over the images carrying the attribute: exact for one-image attributes
    by_id = {s["id"]: s for s in scores}
    label_of = {r["id"]: r["label"] for r in records}
    singles = [(p, a, ids[0]) for p in ("scene", "object") for a, ids in carried[p].items() if len(ids) == 1]
    assert singles
    for prop, attr, image_id in singles:
        assert alpha[prop][attr][label_of[image_id]] == pytest.approx(by_id[image_id]["label_prob"])
        assert max(alpha[prop][attr]) == pytest.approx(by_id[image_id]["score"])

    label = {r["id"]: r["emotion"] for r in records}
    matching = sorted(s["score"] for s in scores if s["pred"] == label[s["id"]])
    assert len(matching) >= 2
    threshold = (matching[0] + matching[1]) / 2  # drops the weakest correct prediction as well
    alpha = _json(compute_alpha(out, classifier=tiny_classifier, filter_threshold=threshold, scoring="in-sample"))
    kept = {s["id"] for s in scores if s["pred"] == label[s["id"]] and s["score"] > threshold}
    rows = [r for r in _jsonl(out / "attributes.jsonl") if r["split"] == "train"]
    for prop in ("scene", "object"):
        filtered = _json(out / "balanced" / f"{prop}_filtered.json")
        expected_rows = [r for r in rows if r["id"] in kept]
        assert set(filtered) == {r["id"] for r in expected_rows if r["property"] == prop}
        assert filtered == balance(expected_rows, prop, 2)
        assert _json(out / "balanced" / f"{prop}.json") == balance(rows, prop, 2)  # unchanged
    assert alpha["filter"]["kept"] == len([r for r in rows if r["id"] in kept])
    assert alpha["filter"]["dropped"] == len(rows) - alpha["filter"]["kept"] > 0

    # label frequency again: the classifier's files go, alpha is recomputed from the labels
    alpha = _json(compute_alpha(out))
    assert alpha["method"] == "label-frequency"
    assert not (out / "emotion_scores.jsonl").exists() and not (out / "balanced" / "scene_filtered.json").exists()
    for attr, per in counts["scene"].items():  # a scene is always the primary attribute
        assert np.allclose(alpha["scene"][attr], np.array(per) / sum(per))


# --- importing the official artifacts --------------------------------------------------------------

def test_import_official_artifacts(tmp_path):
    import torch
    from safetensors.torch import load_file

    from emocli.data.emogen_import import safe_load_pickle
    from emocli.emotion_space import EmotionSpace

    repo = shared_path("data", "emogen-official")
    result = run_emo("data", "import-emogen", "--repo", str(repo), "--out", str(tmp_path / "imp"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "imp"
    assert _files(out) == {"import.json", "emotion_space.safetensors", "alpha.json", "attribute_vocab.json",
                           "attribute_tags.json", "emotion_head.safetensors"}
    assert _json(out / "import.json")["missing"] == []
    alpha = _json(out / "alpha.json")
    assert alpha["method"] == "official-emogen" and alpha["emotions"] == list(EMOSET.labels)
    assert len(alpha["object"]) == 409 and len(alpha["scene"]) == 254
    assert max(alpha["object"]["plastic_bag"]) == alpha["object"]["plastic_bag"][5] > 0.9  # disgust
    original = safe_load_pickle(repo / "dataset_balance" / "attr_coefficient_emotion_scene.pkl")
    assert all(np.allclose(alpha["scene"][k], v) for k, v in original.items())
    vocab = _json(out / "attribute_vocab.json")
    assert sum(len(v) for v in vocab["per_emotion"]["object"].values()) == 156
    assert sum(len(v) for v in vocab["per_emotion"]["scene"].values()) == 122
    assert vocab["vocabulary"] == sorted(set(vocab["vocabulary"])) and len(vocab["vocabulary"]) == 274
    assert "dessert" in vocab["per_emotion"]["object"]["amusement"]
    assert len(_json(out / "attribute_tags.json")) == 655
    space = EmotionSpace.load(out)
    assert tuple(space.mean.shape) == (8, 768) and tuple(space.std.shape) == (8, 768)
    official = torch.load(repo / "emo_space" / "awe_mean_v2.pt", map_location="cpu", weights_only=True)
    assert torch.allclose(space.mean[1], official.float().reshape(-1))
    head = load_file(str(out / "emotion_head.safetensors"))
    assert set(head) == {"weight", "bias"}
    assert tuple(head["weight"].shape) == (8, 768) and tuple(head["bias"].shape) == (8,)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_a_disallowed_global_is_refused(tmp_path):
    from emocli.data.emogen_import import import_emogen, safe_load_pickle

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"attr_awe": _Evil(marker)}))
    with pytest.raises(EmoError, match="refusing to unpickle .*system"):
        safe_load_pickle(evil)
    assert not marker.exists()
    # plain data and numpy arrays load
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"beach": np.arange(8, dtype=np.float32)}))
    assert np.array_equal(safe_load_pickle(ok)["beach"], np.arange(8))

    # inside a checkout: refused, nothing written; a folder with nothing of EmoGen's is an error
    repo = tmp_path / "repo"
    (repo / "dataset_balance").mkdir(parents=True)
    (repo / "dataset_balance" / "object_attr.pkl").write_bytes(evil.read_bytes())
    with pytest.raises(EmoError, match="refusing"):
        import_emogen(repo, tmp_path / "imp")
    assert not (tmp_path / "imp").exists() and not marker.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmoError, match="none of EmoGen's released artifacts"):
        import_emogen(tmp_path / "empty", tmp_path / "imp")


def test_import_reports_missing_pieces(tmp_path):
    from emocli.data.emogen_import import import_emogen

    repo = tmp_path / "repo"
    (repo / "dataset_balance").mkdir(parents=True)
    lists = {f"attr_{e}": [f"{e}_thing"] for e in EMOSET.labels}
    (repo / "dataset_balance" / "scene_attr.pkl").write_bytes(pickle.dumps(lists))
    (repo / "dataset_balance" / "all_attribute_object_scene.pkl").write_bytes(pickle.dumps(["a", "b"]))
    with _warnings() as caught:
        out = import_emogen(repo, tmp_path / "imp")
    manifest = _json(out / "import.json")
    assert set(manifest["written"]) == {"attribute_vocab.json", "attribute_tags.json"}
    assert "emo_space" in manifest["missing"] and "dataset_balance/object_attr.pkl" in manifest["missing"]
    assert "weights/Clip_emotion_classifier/*.pth" in manifest["missing"]
    assert any("emo_space" in r.getMessage() for r in caught)
    vocab = _json(out / "attribute_vocab.json")
    assert vocab["per_emotion"]["scene"]["awe"] == ["awe_thing"] and vocab["per_emotion"]["object"]["awe"] == []


def test_released_emotion_space_with_a_pickled_payload_is_refused_in_one_line(tmp_path):
    import torch

    # A released-style emo_space/: 16 tensors, one of which also carries a pickled callable.
    marker = tmp_path / "pwned"
    space = tmp_path / "repo" / "emo_space"
    space.mkdir(parents=True)
    for emotion in EMOSET.labels:
        for kind in ("mean", "std"):
            torch.save(torch.zeros(768), space / f"{emotion}_{kind}_v2.pt")
    torch.save({"mean": torch.zeros(768), "hook": _Evil(marker)}, space / "awe_mean_v2.pt")
    result = run_emo("data", "import-emogen", "--repo", str(tmp_path / "repo"), "--out", str(tmp_path / "imp"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused to load"), result.stderr
    assert "awe_mean_v2.pt" in lines[0] and "system" in lines[0] and "nothing was unpickled" in lines[0]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists() and not (tmp_path / "imp").exists()
