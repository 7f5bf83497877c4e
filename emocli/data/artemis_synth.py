"""`emo data synth artemis`: a small ArtEmis in the real CSV schemas, with WikiArt-style image folders.

Each artwork has a dominant emotion that decides its colour (so the emotion is learnable from the image) and
gets 5 annotations: 3 of the dominant emotion (a strict majority) and 2 drawn at random. Explanations come
from a small per-emotion vocabulary. Also written: a synthetic VAD lexicon in the NRC-VAD v1 text format
(numbers made up here; the real NRC-VAD may not be redistributed) and one painting name with a combining
accent stored on disk with WikiArt's `#U` escape.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emocli.data.artemis import SPLIT_FRACTIONS, _escaped
from emocli.emotions import ARTEMIS
from emocli.errors import EmoError

STYLES = ("Impressionism", "Baroque", "Cubism")
NOUNS = ("sky", "woman", "house", "river", "tree", "man", "sea", "field")
WORDS = {
    "amusement": ("funny", "playful", "silly"),
    "awe": ("grand", "vast", "majestic"),
    "contentment": ("calm", "peaceful", "gentle"),
    "excitement": ("lively", "energetic", "thrilling"),
    "anger": ("harsh", "violent", "furious"),
    "disgust": ("ugly", "rotten", "gross"),
    "fear": ("scary", "menacing", "dark"),
    "sadness": ("lonely", "gloomy", "sad"),
    "something else": ("strange", "odd", "unclear"),
}
IMAGE_SIZE = 48
LEXICON_NAME = "synthetic-vad-lexicon.txt"


def _image(emotion_index: int, rng: np.random.Generator) -> Image.Image:
    hue = emotion_index * 40.0
    colour = Image.new("HSV", (1, 1), (int(hue / 360 * 255), 200, 220)).convert("RGB").getpixel((0, 0))
    pixels = np.clip(np.array(colour, dtype=np.float32) + rng.normal(0, 12, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
    img = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    x, y = rng.integers(0, IMAGE_SIZE // 2, 2)
    draw.ellipse([int(x), int(y), int(x) + 16, int(y) + 16], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def _explanation(emotion: str, rng: random.Random) -> str:
    first, second = rng.sample(WORDS[emotion], 2)
    return f"the {rng.choice(NOUNS)} looks {first} and {second} to me"


def synth_artemis(out, n: int, seed: int = 0, corrupt: int = 0, missing: int = 0) -> Path:
    """Write `n` artworks: artemis_dataset_release_v0.csv, artemis_preprocessed.csv, wikiart/, the lexicon."""
    if n < 3:
        raise EmoError(f"--n {n} is too small; at least 3 artworks (one per split) are needed")
    out = Path(out)
    images = out / "wikiart"
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    rows, artworks = [], []
    for i in range(n):
        dominant = ARTEMIS.labels[i % len(ARTEMIS)]
        style = STYLES[i % len(STYLES)]
        painting = f"artist-{i:04d}_painting-{i}"
        if i == 1:  # a combining acute accent, as in WikiArt names; stored on disk with the #U escape
            painting = f"claude-monet_cafe\u0301-{i}"
        file_name = _escaped(painting) if i == 1 else painting
        path = images / style / f"{file_name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        _image(ARTEMIS.index(dominant), np_rng).save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
        if i >= n - corrupt - missing:
            data = None if i >= n - missing else data[: len(data) // 3]
        if data is not None:
            path.write_bytes(data)
        emotions = [dominant] * 3 + [rng.choice(ARTEMIS.labels) for _ in range(2)]
        for emotion in emotions:
            rows.append({"art_style": style, "painting": painting, "emotion": emotion,
                         "utterance": _explanation(emotion, rng), "repetition": 5})
        artworks.append((style, painting))
    order = list(range(n))
    rng.shuffle(order)
    n_train = max(1, int(round(SPLIT_FRACTIONS[0] * n)))
    n_val = max(1, int(round(SPLIT_FRACTIONS[1] * n)))
    split_of = {artworks[j]: "train" if k < n_train else "val" if k < n_train + n_val else "test"
                for k, j in enumerate(order)}
    _write_csv(out / "artemis_dataset_release_v0.csv", rows, ["art_style", "painting", "emotion", "utterance",
                                                                "repetition"])
    for row in rows:
        row["split"] = split_of[(row["art_style"], row["painting"])]
        row["emotion_label"] = ARTEMIS.index(row["emotion"])
    _write_csv(out / "artemis_preprocessed.csv", rows, ["art_style", "painting", "emotion", "utterance",
                                                          "repetition", "split", "emotion_label"])
    write_synthetic_lexicon(out / LEXICON_NAME, seed=seed)
    return out


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_synthetic_lexicon(path, seed: int = 0) -> Path:
    """A made-up VAD lexicon (NRC-VAD v1 layout: header, then word<TAB>V<TAB>A<TAB>D in [0, 1])."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    lines = ["Word\tValence\tArousal\tDominance"]
    for index, emotion in enumerate(ARTEMIS.labels):
        positive = ARTEMIS.polarity(emotion) == "positive"
        for word in WORDS[emotion]:
            v = (0.7 if positive else 0.25) + rng.uniform(-0.1, 0.1)
            a, d = 0.2 + 0.07 * index, rng.uniform(0.2, 0.8)
            lines.append(f"{word}\t{v:.3f}\t{a:.3f}\t{d:.3f}")
    for word in ("look", "sky", "woman", "house", "river", "tree", "sea", "field", "emotion"):
        lines.append(f"{word}\t{rng.uniform(0.3, 0.7):.3f}\t{rng.uniform(0.2, 0.6):.3f}\t{rng.uniform(0.3, 0.7):.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
