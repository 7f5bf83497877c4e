"""Classification metrics in numpy: accuracy, confusion matrix, per-class precision/recall/F1, macro-F1.

Conventions (the same as scikit-learn's defaults with ``zero_division=0``):

- Labels are integer class indices 0..K-1 (map names with `emocli.emotions.Taxonomy.index` first).
- `confusion_matrix`: rows are true classes, columns predicted ones, int64 counts; K is `num_classes`
  when given, else ``max(label) + 1``.
- Per-class precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R); a ratio whose
  denominator is 0 counts as 0.
- `macro_f1`: the unweighted mean of per-class F1 over `labels` when given, otherwise over the classes
  that occur in `y_true` or `y_pred` (scikit-learn's ``average="macro"``). Pass ``labels=range(K)`` to
  average over every class of a taxonomy, absent ones counting as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from emocli.errors import EmoError


def _as_labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y.tolist() if hasattr(y, "tolist") else list(y))
    if arr.ndim != 1:
        raise EmoError(f"{name} must be a 1-d sequence of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise EmoError(f"{name} must hold integer class indices (map label names to indices first)")
    if arr.size and arr.min() < 0:
        raise EmoError(f"{name} holds a negative class index")
    return arr.astype(np.int64)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise EmoError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise EmoError("no predictions to score")
    return t, p


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of exact matches."""
    t, p = _pair(y_true, y_pred)
    return float((t == p).mean())


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    t, p = _pair(y_true, y_pred)
    k = int(num_classes) if num_classes is not None else int(max(t.max(), p.max())) + 1
    if max(t.max(), p.max()) >= k:
        raise EmoError(f"a class index is >= num_classes={k}")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(y_true: Sequence[int], y_pred: Sequence[int], labels: Iterable[int] | None = None) -> dict:
    """{"labels", "precision", "recall", "f1", "support"} arrays over `labels` (default: classes present)."""
    t, p = _pair(y_true, y_pred)
    if labels is None:
        labels = np.unique(np.concatenate([t, p]))
    labels = np.asarray(list(labels), dtype=np.int64)
    tp = np.array([np.sum((t == c) & (p == c)) for c in labels], dtype=np.float64)
    fp = np.array([np.sum((t != c) & (p == c)) for c in labels], dtype=np.float64)
    fn = np.array([np.sum((t == c) & (p != c)) for c in labels], dtype=np.float64)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"labels": labels, "precision": precision, "recall": recall, "f1": f1,
            "support": (tp + fn).astype(np.int64)}


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], labels: Iterable[int] | None = None) -> float:
    """Unweighted mean of per-class F1 (see the module docstring for which classes count)."""
    return float(per_class_scores(y_true, y_pred, labels)["f1"].mean())


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str] | None = None) -> dict:
    """Accuracy, macro-F1 over all K classes, per-class scores and the confusion matrix, JSON-friendly.

    K is ``len(class_names)`` when names are given (macro-F1 then averages over all K), else the classes present.
    """
    t, p = _pair(y_true, y_pred)
    if class_names is not None:
        k = len(class_names)
        labels = list(range(k))
    else:
        labels = sorted(set(t.tolist()) | set(p.tolist()))
        k = max(labels) + 1
    scores = per_class_scores(t, p, labels)
    names = [class_names[c] if class_names is not None else str(c) for c in labels]
    return {
        "accuracy": accuracy(t, p),
        "macro_f1": float(scores["f1"].mean()),
        "per_class": {name: {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(s)}
                      for name, pr, rc, f, s in zip(names, scores["precision"], scores["recall"], scores["f1"],
                                                    scores["support"])},
        "confusion": confusion_matrix(t, p, k).tolist(),
        "n": int(t.size),
    }
