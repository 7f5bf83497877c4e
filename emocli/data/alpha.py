"""`emo data alpha`: EmoGen's emotion confidence alpha for every attribute of a prepared EmoSet folder.

alpha[attribute][i] is the mean probability of emotion i over all training images *carrying* the
attribute (EmoGen, report Eq. 5): a scene attribute over the images annotated with that scene, an
object attribute over every image whose object list holds it, not only where it is the primary
attribute. This is how the released tables were made: they have a row for each of EmoSet's 409
objects and 254 scenes, while primary attributes cover fewer.

The probabilities: without a classifier the one-hot labels (alpha = the label frequency of each
emotion among the attribute's images); with an `emo train emotion-classifier` run (the CLIP linear
probe the fork used) its softmax, cross-fitted by default (`scoring="cross-fit"`, see
emocli/methods/emotion_classifier/crossfit.py: no image is scored by a head that trained on it);
with an emotion-encoder run or `scoring="in-sample"` the softmax of a model that trained on these
images. Writes into the prepared folder:

    alpha.json              {"method", "classifier", "scoring", "definition", "emotions",
                             "scene": {attr: [8]}, "object": {attr: [8]}}
    emotion_scores.jsonl    (classifier only) per training image: id, pred, score (max prob), label_prob
    balanced/{scene,object}_filtered.json
                            (with filter_threshold) the balanced lists rebuilt without the images the
                            fork's compute_emo_score rule drops: predicted emotion != label, or score <= T
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from emocli.data.prepare import PROPERTIES, PreparedEmoSet, balance, normalise_attribute, write_json
from emocli.emotions import EMOSET
from emocli.errors import EmoError

log = logging.getLogger("emocli")

ALPHA = "alpha.json"
SCORES = "emotion_scores.jsonl"
FILTER_RULE = "dropped when the predicted emotion differs from the label or its probability (score) <= threshold"
DEFINITION = ("mean emotion probability over all images carrying the attribute (a scene: its images; an object: "
              "every image whose object list holds it)")


def carried_attributes(record: dict) -> dict[str, set[str]]:
    """{"scene": {its scene}, "object": {every object}} of a canonical record, names normalised."""
    scene = record.get("scene")
    objects = [o for o in (record.get("objects") or []) if isinstance(o, str) and o]
    return {"scene": {normalise_attribute(scene)} if isinstance(scene, str) and scene else set(),
            "object": {normalise_attribute(o) for o in objects}}


def alpha_from_probs(records: list[dict], probs: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """{"scene": {attr: mean prob [8]}, "object": {...}} over the `records` (canonical records) that have
    probs, each counted once for every attribute it carries."""
    sums: dict[str, dict[str, np.ndarray]] = {p: {} for p in PROPERTIES}
    counts: dict[str, dict[str, int]] = {p: {} for p in PROPERTIES}
    for record in records:
        p = probs.get(record["id"])
        if p is None:
            continue
        for prop, names in carried_attributes(record).items():
            for name in names:
                sums[prop][name] = sums[prop].get(name, np.zeros(len(EMOSET))) + np.asarray(p, np.float64)
                counts[prop][name] = counts[prop].get(name, 0) + 1
    return {prop: {attr: [float(x) for x in sums[prop][attr] / counts[prop][attr]] for attr in sorted(sums[prop])}
            for prop in PROPERTIES}


def label_probs(rows: list[dict]) -> dict[str, np.ndarray]:
    """One-hot "probabilities" from the labels (alpha is then the label frequency)."""
    eye = np.eye(len(EMOSET))
    return {row["id"]: eye[int(row["label"])] for row in rows}


def classify(records: list[dict], classifier, batch_size: int = 64, device=None,
             num_workers: int = 0) -> dict[str, np.ndarray]:
    """Softmax probabilities [8] of an emotion encoder (run or model folder) for each record's image."""
    import torch

    from emocli.data.emoset import EmoSetImages, collate_skip_bad
    from emocli.data.transforms import image_transform
    from emocli.methods.emotion_encoder.model import EmotionEncoder
    from emocli.progress import track

    model = EmotionEncoder.from_pretrained(classifier)
    if int(model.meta.get("num_emotions", len(EMOSET))) != len(EMOSET):
        raise EmoError(f"classifier {classifier} predicts {model.meta.get('num_emotions')} emotions, not "
                       f"EmoSet's {len(EMOSET)}")
    pre = model.meta.get("preprocess") or {}
    transform = image_transform(pre.get("resize", 256), crop=pre.get("image_size", 224),
                                mean=pre.get("mean", (0.5,) * 3), std=pre.get("std", (0.5,) * 3))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    dataset = EmoSetImages(records, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False,
                                         num_workers=int(num_workers), collate_fn=collate_skip_bad)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for batch in track(loader, description="emotion scores", every=max(10, len(loader) // 20)):
            if batch is None:
                continue
            logits = model(batch["pixel_values"].to(device)).float()
            probs = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
            for index, p in zip(batch["index"].tolist(), probs):
                out[records[index]["id"]] = p
    missing = len(records) - len(out)
    if missing:
        log.warning("%d image(s) could not be read and have no emotion score", missing)
    return out


def compute_alpha(prepared, classifier=None, filter_threshold: float | None = None, batch_size: int = 64,
                  device=None, num_workers: int = 0, scoring: str = "cross-fit") -> Path:
    """Write alpha.json (and, with a classifier, emotion_scores.jsonl; with a threshold, the filtered
    balanced lists) into the prepared folder; returns the path of alpha.json. `scoring`: "cross-fit"
    (an emotion-classifier run's fold heads) or "in-sample" (the classifier as it is)."""
    from emocli.methods.emotion_classifier.crossfit import SCORINGS, is_classifier_run, score_images

    if scoring not in SCORINGS:
        raise EmoError(f"unknown --scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
    if filter_threshold is not None:
        if classifier is None:
            raise EmoError("--filter-threshold needs --classifier (the filter drops images by the classifier's "
                           "predictions)")
        if not 0.0 <= float(filter_threshold) < 1.0:
            raise EmoError(f"--filter-threshold must be within [0, 1), got {filter_threshold}")
    if int(batch_size) < 1:
        raise EmoError(f"batch_size must be positive, got {batch_size}")
    folder = PreparedEmoSet(prepared)
    if classifier is not None and not Path(str(classifier)).expanduser().exists():
        raise EmoError(f"classifier {classifier} does not exist (pass an emotion-encoder run or model folder)")
    rows = folder.training_rows()
    splits = set(folder.attribute_splits)
    emotions = list(EMOSET.labels)
    records = [r for r in folder.records() if r["split"] in splits]
    scoring_info = None

    if classifier is None:
        probs = label_probs(records)
        method, name, scoring = "label-frequency", None, None
        _remove_stale(folder.path, [SCORES, *(f"balanced/{p}_filtered.json" for p in PROPERTIES)])
    else:
        name = str(Path(str(classifier)).expanduser().resolve())
        if is_classifier_run(name):
            probs, scoring_info = score_images(name, records, scoring, batch_size=batch_size, device=device)
            method = "emotion-classifier"
        else:
            if scoring == "cross-fit":
                raise EmoError(f"{classifier} is an emotion-encoder model, which trained on the images it would "
                               f"score and has no cross-fitted heads: give an `emo train emotion-classifier` run "
                               f"(trained with data.cross_fit_folds), or pass --scoring in-sample")
            probs = classify(records, name, batch_size=batch_size, device=device, num_workers=num_workers)
            method = "classifier"
        scores = []
        for r in records:
            p = probs.get(r["id"])
            if p is None:
                continue
            pred = int(np.argmax(p))
            scores.append({"id": r["id"], "pred": emotions[pred], "score": float(p[pred]),
                           "label_prob": float(p[int(r["label"])])})
        _write_jsonl_atomic(folder.path / SCORES, scores)

    alpha = {"method": method, "classifier": name, "scoring": scoring, "definition": DEFINITION,
             "emotions": emotions, **alpha_from_probs(records, probs)}
    if scoring_info:
        alpha["scoring_detail"] = scoring_info

    if filter_threshold is not None:
        threshold = float(filter_threshold)
        kept_rows = []
        for row in rows:
            p = probs.get(row["id"])
            if p is not None and int(np.argmax(p)) == int(row["label"]) and float(np.max(p)) > threshold:
                kept_rows.append(row)
        sizes = {}
        for prop in PROPERTIES:
            ids = balance(kept_rows, prop, folder.seed)
            _write_json_atomic(folder.path / "balanced" / f"{prop}_filtered.json", ids)
            sizes[prop] = len(ids)
        alpha["filter"] = {"threshold": threshold, "rule": FILTER_RULE, "images": len(rows),
                           "kept": len(kept_rows), "dropped": len(rows) - len(kept_rows), "balanced": sizes}
        log.info("filter: kept %d of %d attribute images (threshold %.3g)", len(kept_rows), len(rows), threshold)
    elif classifier is not None:
        _remove_stale(folder.path, [f"balanced/{p}_filtered.json" for p in PROPERTIES])

    path = folder.path / ALPHA
    _write_json_atomic(path, alpha, indent=2)
    return path


def _remove_stale(folder: Path, names) -> None:
    for name in names:
        path = folder / name
        if path.is_file():
            path.unlink()
            log.info("removed %s (stale: made by an earlier `emo data alpha` with other options)", path)


def _write_json_atomic(path: Path, obj, indent: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, obj, indent=indent)
    tmp.replace(path)


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
