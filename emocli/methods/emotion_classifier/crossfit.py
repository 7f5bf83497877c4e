"""Out-of-sample emotion scores from an `emo train emotion-classifier` run (cross-fitting).

EmoGen's alpha and the fork's emotion-score filter read a classifier's probabilities for EmoSet's
*training* images. A classifier that trained on an image scores it too confidently, so with
`data.cross_fit_folds: k` the run also trains k fold heads: the training images are split into k
seeded folds and head f trains on the other k - 1 folds, with the main head's optimiser, schedule and
length (a linear head on cached features: seconds each). Written to

    RUN/final/cross_fit/folds.json                 k, seed, {image path: fold} of every training image
    RUN/final/cross_fit/fold-<f>/emotion_head.*    head f

`score_images` then reads each training image's probabilities from the head of its fold, and every
other image's (val, test, images left out by a cap) from the main head, which never saw them: no
image is scored by a head that trained on it. `scoring="in-sample"` uses the main head for all.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emocli.emotions import EMOSET
from emocli.errors import EmoError

log = logging.getLogger("emocli")

CROSS_FIT_DIR = "cross_fit"
FOLDS_FILE = "folds.json"
SCORINGS = ("cross-fit", "in-sample")


def path_key(path) -> str:
    return str(Path(str(path)).expanduser().resolve())


def fold_assignment(paths: list[str], folds: int, seed: int) -> dict[str, int]:
    """{image path: fold}: a seeded permutation of the sorted paths dealt round-robin into `folds` folds."""
    ordered = sorted({path_key(p) for p in paths})
    order = np.random.default_rng([int(seed), 5]).permutation(len(ordered))
    return {ordered[int(i)]: rank % folds for rank, i in enumerate(order)}


def train_head(x: torch.Tensor, y: torch.Tensor, recipe, seed: int):
    """An EmotionHead trained on (x, y) like the run's main head: AdamW with recipe.optim, its LR
    schedule, recipe.train's batch size x accumulation, epochs (or max_steps) and gradient clipping."""
    from transformers import get_scheduler

    from emocli.metrics.emotion import EmotionHead

    optim, train = recipe.optim, recipe.train
    torch.manual_seed(seed)
    head = EmotionHead(dim=int(x.shape[1]), num_classes=len(EMOSET))
    optimizer = torch.optim.AdamW(head.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    batch = train.batch_size * train.grad_accum
    total = train.max_steps or train.epochs * math.ceil(len(y) / batch)
    scheduler = get_scheduler(optim.scheduler, optimizer=optimizer, num_warmup_steps=optim.warmup_steps,
                              num_training_steps=total)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while step < total:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            F.cross_entropy(head(x[index]), y[index]).backward()
            if train.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(head.parameters(), train.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step >= total:
                break
    return head.eval()


def train_fold_heads(x: torch.Tensor, y: torch.Tensor, paths: list[str], recipe, directory: Path) -> dict:
    """Train and save the k fold heads of `data.cross_fit_folds` into `directory` (RUN/final/cross_fit)."""
    from emocli.methods.emotion_classifier.head import save_emotion_head
    from emocli.runs import write_json_atomic

    folds, seed = int(recipe.data.cross_fit_folds), int(recipe.run.seed)
    assignment = fold_assignment(paths, folds, seed)
    fold_of = torch.tensor([assignment[path_key(p)] for p in paths])
    accuracy = {}
    for f in range(folds):
        train, held = fold_of != f, fold_of == f
        if int(train.sum()) == 0 or int(held.sum()) == 0:
            raise EmoError(f"data.cross_fit_folds={folds} leaves fold {f} empty or alone ({len(paths)} training "
                           f"images); use fewer folds")
        head = train_head(x[train], y[train], recipe, seed + 1 + f)
        save_emotion_head(directory / f"fold-{f}", head.state_dict(), recipe.model.clip)
        with torch.no_grad():
            accuracy[f] = float((head(x[held]).argmax(-1) == y[held]).float().mean())
    write_json_atomic(directory / FOLDS_FILE, {"folds": folds, "seed": seed, "assignment": assignment,
                                               "held_out_accuracy": accuracy})
    log.info("cross-fitting: %d fold heads, held-out accuracy %s", folds,
             ", ".join(f"{100 * a:.1f}%" for a in accuracy.values()))
    return accuracy


def is_classifier_run(path) -> bool:
    """True for an `emo train emotion-classifier` run directory (or its final/model folder)."""
    from emocli.methods.emotion_classifier.head import CONFIG_FILE

    p = Path(str(path)).expanduser()
    return (p / "final" / "model" / CONFIG_FILE).is_file() or (p / CONFIG_FILE).is_file()


def _run_dir(path: Path) -> Path:
    return path if (path / "final").is_dir() else path.parent.parent  # RUN or RUN/final/model


def score_images(classifier, records: list[dict], scoring: str = "cross-fit", batch_size: int = 64,
                 device=None) -> tuple[dict[str, np.ndarray], dict]:
    """({record id: softmax [8]}, info) for `records` by an emotion-classifier run; see the module doc."""
    from emocli.evaluation.backbones import ClipImageExtractor, clip_identity, load_clip
    from emocli.evaluation.cache import FeatureCache, extract_features
    from emocli.methods.emotion_classifier.head import load_emotion_head

    if scoring not in SCORINGS:
        raise EmoError(f"unknown scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
    root = Path(str(classifier)).expanduser().resolve()
    run = _run_dir(root)
    head, info = load_emotion_head(root, "--classifier")
    heads, assignment = {}, {}
    if scoring == "cross-fit":
        folds_file = run / "final" / CROSS_FIT_DIR / FOLDS_FILE
        if not folds_file.is_file():
            raise EmoError(f"{classifier} has no cross-fitted heads ({folds_file} missing): train it with "
                           f"data.cross_fit_folds=5 (or more), or pass --scoring in-sample to score every image "
                           f"with the head that trained on the training images")
        folds = json.loads(folds_file.read_text())
        assignment = folds["assignment"]
        heads = {f: load_emotion_head(run / "final" / CROSS_FIT_DIR / f"fold-{f}", "--classifier")[0]
                 for f in range(int(folds["folds"]))}
    clip = info.get("clip")
    if not clip:
        raise EmoError(f"{info['source']} does not say which CLIP made its features (emotion_head.json 'clip'); "
                       f"use an `emo train emotion-classifier` run")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    class _Lazy:  # loads CLIP only when some image is not in the run's feature cache
        extractor = None

        def __call__(self, images):
            if self.extractor is None:
                model, processor = load_clip(clip, "the classifier's CLIP", device)
                self.extractor = ClipImageExtractor(model, processor, clip, batch_size)
            return self.extractor(images)

    cache = FeatureCache(run / "cache", "clip", clip_identity(clip))
    out = extract_features([r["image"] for r in records], {"clip": cache}, {"clip": _Lazy()}, batch_size,
                           skip_unreadable=True, description="CLIP features for emotion scores")
    features = out.features["clip"]
    by_head: dict[object, list[int]] = {}
    for row, index in enumerate(out.kept):
        fold = assignment.get(path_key(records[index]["image"]))
        by_head.setdefault("main" if fold is None else int(fold), []).append(row)
    probs: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for which, rows in by_head.items():
            model = head if which == "main" else heads[which]
            p = torch.softmax(model(features[rows]).float(), dim=-1).numpy().astype(np.float64)
            for row, value in zip(rows, p):
                probs[records[out.kept[row]]["id"]] = value
    missing = len(records) - len(probs)
    if missing:
        log.warning("%d image(s) could not be read and have no emotion score", missing)
    counts = {("main head" if k == "main" else f"fold {k}"): len(v) for k, v in sorted(by_head.items(), key=str)}
    return probs, {"scoring": scoring, "folds": len(heads) or None, "images_per_head": counts, "clip": clip}
