"""Emo-A: emotion accuracy of generated images, judged by EmoGen's released CLIP emotion classifier.

Convention (EmoGen ``training/inference.py:emo_cls``):

- **Features**: CLIP ViT-L/14 (``openai/clip-vit-large-patch14``) ``get_image_features`` with the
  CLIPProcessor's preprocessing, *unnormalised* 768-d projected embeddings
  (`clip_scores.clip_image_features(...).features`).
- **Classifier**: one ``Linear(768 -> 8)`` (`EmotionHead`), the released file
  ``Clip_emotion_classifier/time_2023-11-12_03-29-best.pth`` (keys ``fc.weight`` [8, 768], ``fc.bias`` [8];
  saved on a CUDA machine, so it is read with ``map_location="cpu"``; a DataParallel ``module.`` prefix is
  stripped). It was trained on EmoSet only. Point the recipe key ``eval.emo_a.classifier_weights`` at it.
- **Classes**: EmoSet order (`emocli.emotions.EMOSET`): amusement, awe, contentment, excitement (positive),
  anger, disgust, fear, sadness (negative). The label of a generated image is the emotion it was asked for.
- **Numbers** (`emotion_accuracy`): 8-class top-1 accuracy (Emo-A, Table 1: 76.25% for EmoGen); polarity
  accuracy where the predicted polarity compares the softmax mass of the 4 positive classes with that of the
  4 negative ones (strictly greater positive mass -> positive); per-emotion accuracy; mean softmax probability
  of the intended emotion; the 8x8 confusion matrix (rows = intended, columns = predicted).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from emocli.emotions import EMOSET, Taxonomy
from emocli.errors import EmoError
from emocli.metrics.common import load_state_dict_file

RECIPE_KEY = "eval.emo_a.classifier_weights"
OFFICIAL_FILE = "time_2023-11-12_03-29-best.pth"


class EmotionHead(nn.Module):
    """``Linear(dim -> num_classes)`` stored as ``fc`` (the released classifier's key layout)."""

    def __init__(self, dim: int = 768, num_classes: int = 8):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.to(self.fc.weight.dtype))

    @classmethod
    def load_official(cls, path) -> EmotionHead:
        """Read EmoGen's released classifier (`emocli.safeload.load_weights_only`)."""
        state = load_state_dict_file(path, RECIPE_KEY, f"EmoGen CLIP emotion classifier ({OFFICIAL_FILE})")
        if "fc.weight" not in state or "fc.bias" not in state:
            raise EmoError(f"{str(path)!r} has no fc.weight/fc.bias (found: {sorted(state)[:6]}); expected "
                           f"EmoGen's {OFFICIAL_FILE} (recipe key {RECIPE_KEY})")
        weight, bias = state["fc.weight"], state["fc.bias"]
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise EmoError(f"{str(path)!r}: fc.weight {tuple(weight.shape)} / fc.bias {tuple(bias.shape)} "
                           "do not form a linear layer")
        head = cls(dim=weight.shape[1], num_classes=weight.shape[0])
        head.load_state_dict({"fc.weight": weight.float(), "fc.bias": bias.float()})
        return head.eval()


@torch.no_grad()
def emotion_logits(model, processor, head: EmotionHead, images, batch_size: int = 32) -> torch.Tensor:
    """Logits of `head` on raw CLIP image embeddings of `images` (EmoGen's Emo-A pipeline)."""
    from emocli.metrics.clip_scores import clip_image_features

    features = clip_image_features(model, processor, images, batch_size).features
    return head(features.to(head.fc.weight.device)).cpu()


def _label_indices(labels, taxonomy: Taxonomy) -> np.ndarray:
    out = []
    for label in labels:
        if isinstance(label, (int, np.integer)) or (isinstance(label, torch.Tensor) and label.ndim == 0):
            out.append(taxonomy.index(taxonomy.label(int(label))))
        else:
            out.append(taxonomy.index(str(label)))
    return np.asarray(out, dtype=np.int64)


def emotion_accuracy(logits, labels: Sequence, taxonomy: Taxonomy = EMOSET) -> dict:
    """Emo-A report from classifier logits (N, K) and intended labels (indices or names).

    Returns ``accuracy``, ``polarity_accuracy`` (None when the taxonomy has no polarity), ``per_emotion``
    ({label: accuracy, or None when the label has no images}), ``mean_true_prob``, ``confusion`` (K x K list
    of ints, rows intended, columns predicted), ``n`` and ``labels``.
    """
    logits = torch.as_tensor(logits).detach().double().cpu()
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    y = _label_indices(labels, taxonomy)
    k = len(taxonomy)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise EmoError(f"logits must be (N, {k}) for the {taxonomy.name} taxonomy, got {tuple(logits.shape)}")
    if logits.shape[0] != y.size:
        raise EmoError(f"{logits.shape[0]} logits but {y.size} labels")
    if y.size == 0:
        raise EmoError("no predictions to score")
    probs = torch.softmax(logits, dim=1).numpy()
    pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    per_emotion = {
        label: (float((pred[y == i] == i).mean()) if (y == i).any() else None)
        for i, label in enumerate(taxonomy.labels)
    }
    polarity_accuracy = None
    if taxonomy.polarity_of:
        pos = np.array([taxonomy.polarity_of[label] == "positive" for label in taxonomy.labels])
        neg = np.array([taxonomy.polarity_of[label] == "negative" for label in taxonomy.labels])
        polar = pos[y] | neg[y]
        if polar.any():
            pred_positive = probs[:, pos].sum(axis=1) > probs[:, neg].sum(axis=1)
            polarity_accuracy = float((pred_positive[polar] == pos[y][polar]).mean())
    return {
        "accuracy": float((pred == y).mean()),
        "polarity_accuracy": polarity_accuracy,
        "per_emotion": per_emotion,
        "mean_true_prob": float(probs[np.arange(y.size), y].mean()),
        "confusion": confusion.tolist(),
        "n": int(y.size),
        "labels": list(taxonomy.labels),
    }
