"""A tiny synthetic EmoSet-118K in the official release layout, for tests and smoke runs.

    out_dir/info.json                                   the real label vocabulary (byte-identical)
    out_dir/{train,val,test}.json                       [[emotion, image_id, image_rel, annotation_rel], ...]
    out_dir/image/<emotion>/<emotion>_<5 digits>.jpg
    out_dir/annotation/<emotion>/<emotion>_<5 digits>.json

Annotations use the real vocabularies with an emotion-dependent bias (each emotion prefers a few
scenes, objects, facial expressions, actions and a brightness/colorfulness level), and every key is
sometimes absent, as in the real data. Images are drawn so that a tiny model can learn both the
emotion and the attributes: the background hue is the emotion's, its value follows brightness and its
saturation colorfulness; a large shape (circle/square/triangle/stripes) with a position and colour set
by the scene, and small corner markers set by the objects; plus a little jitter and pixel noise.
Everything is deterministic by `seed`: same arguments -> byte-identical files.
"""

from __future__ import annotations

import colorsys
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emocli.data.emoset_vocab import (
    BRIGHTNESS,
    COLORFULNESS,
    EMOTION,
    FACIAL_EXPRESSION,
    HUMAN_ACTION,
    OBJECT,
    SCENE,
    info_json,
)
from emocli.errors import EmoError

SPLIT_NAMES = ("train", "val", "test")
SHAPES = ("circle", "square", "triangle", "stripes")
IMAGE_SIZE = 64
JPEG_QUALITY = 90

# Per emotion: background hue (degrees, 45 apart), preferred attributes, and mean brightness /
# colorfulness (0..1). The preferences are plausible, not measured from the real data.
PROFILES: dict[str, dict] = {
    "amusement": dict(
        hue=45, brightness=0.7, colorfulness=0.8,
        scenes=("amusement_park", "carrousel", "playground", "water_park"),
        objects=("Balloon", "Toy", "Ice cream", "Doll"),
        faces=("happy",),
        actions=("laughing", "bouncing on trampoline", "juggling balls"),
    ),
    "awe": dict(
        hue=180, brightness=0.65, colorfulness=0.6,
        scenes=("mountain_snowy", "glacier", "waterfall", "sky"),
        objects=("Tree", "Skyscraper", "Castle", "Bird"),
        faces=("surprise",),
        actions=("rock climbing", "paragliding", "skydiving"),
    ),
    "contentment": dict(
        hue=90, brightness=0.6, colorfulness=0.5,
        scenes=("lawn", "botanical_garden", "beach", "park"),
        objects=("Flower", "Houseplant", "Coffee cup", "Book"),
        faces=("happy",),
        actions=("reading book", "yoga", "watering plants"),
    ),
    "excitement": dict(
        hue=315, brightness=0.65, colorfulness=0.9,
        scenes=("stadium", "discotheque", "stage", "racecourse"),
        objects=("Football", "Surfboard", "Motorcycle", "Drum"),
        faces=("happy", "surprise"),
        actions=("celebrating", "dancing", "surfing water"),
    ),
    "anger": dict(
        hue=0, brightness=0.4, colorfulness=0.6,
        scenes=("boxing_ring", "street", "jail_cell", "army_base"),
        objects=("Weapon", "Handgun", "Flag", "Helmet"),
        faces=("angry",),
        actions=("punching bag", "wrestling", "headbutting", "slapping"),
    ),
    "disgust": dict(
        hue=135, brightness=0.4, colorfulness=0.4,
        scenes=("landfill", "junkyard", "swamp", "slum"),
        objects=("Insect", "Worm", "Plastic bag", "Waste container"),
        faces=("disgust",),
        actions=("garbage collecting", "cleaning toilet", "sniffing"),
    ),
    "fear": dict(
        hue=270, brightness=0.25, colorfulness=0.3,
        scenes=("catacomb", "cemetery", "forest_path", "burial_chamber"),
        objects=("Spider", "Snake", "Skull", "Knife"),
        faces=("fear",),
        actions=("holding snake", "bungee jumping", "ice climbing"),
    ),
    "sadness": dict(
        hue=225, brightness=0.35, colorfulness=0.25,
        scenes=("hospital_room", "waiting_room", "railroad_track", "nursing_home"),
        objects=("Wheelchair", "Umbrella", "Candle", "Window"),
        faces=("sad",),
        actions=("crying", "yawning", "pushing wheelchair"),
    ),
}

# probability that an annotation key is absent from an image's annotation JSON
ABSENT_P = {
    "scene": 0.2, "object": 0.2, "facial_expression": 0.5, "human_action": 0.4,
    "brightness": 0.1, "colorfulness": 0.1,
}
PREFERRED_P = 0.7  # chance that an attribute is drawn from the emotion's preferred values


def synth_emoset(
    out_dir,
    n: int,
    seed: int = 0,
    splits=(0.8, 0.1, 0.1),
    *,
    corrupt: int = 0,
    grayscale: int = 0,
    rgba: int = 0,
) -> Path:
    """Write a synthetic EmoSet-118K release of `n` images (all splits together) into `out_dir`.

    Every emotion gets n // 8 or n // 8 + 1 images (n >= 8). `splits` are the train/val/test
    fractions (normalised); each emotion is split separately, and every split with a positive
    fraction gets at least one image of each emotion whenever that emotion has enough images.

    Fault injection for robustness tests (distinct images, picked deterministically by `seed`):
    `corrupt` images are truncated JPEGs (the first half of the encoded bytes); `grayscale` images
    are mode 'L' JPEGs; `rgba` images are RGBA with a transparent region, stored as PNG bytes under
    the `.jpg` name (JPEG cannot hold an alpha channel; real scraped datasets contain such files).

    Files with the same names are overwritten; other files in `out_dir` are left alone.
    Returns `out_dir` as a Path.
    """
    n = _check_int("n", n)
    if n < len(EMOTION):
        raise EmoError(f"synth_emoset needs n >= {len(EMOTION)} (one image per emotion), got {n}")
    fractions = _check_splits(splits)
    faults = {"corrupt": _check_int("corrupt", corrupt), "grayscale": _check_int("grayscale", grayscale),
              "rgba": _check_int("rgba", rgba)}
    if sum(faults.values()) > n:
        raise EmoError(f"synth_emoset: corrupt + grayscale + rgba = {sum(faults.values())} exceeds n = {n}")

    out = Path(out_dir)
    rng = np.random.default_rng(seed)

    # plan: which images exist, their split and their latent attributes
    split_entries: dict[str, list[list[str]]] = {s: [] for s in SPLIT_NAMES}
    images: list[tuple[int, int, str]] = []  # (emotion index, number, split)
    for e_idx in range(len(EMOTION)):
        count = n // len(EMOTION) + (1 if e_idx < n % len(EMOTION) else 0)
        per_split = _allocate(count, fractions, rotate=e_idx)
        order = rng.permutation(count)
        pos = 0
        for split, k in zip(SPLIT_NAMES, per_split):
            for num in sorted(int(x) for x in order[pos:pos + k]):
                images.append((e_idx, num, split))
            pos += k

    fault_of: dict[tuple[int, int], str] = {}
    picks = rng.permutation(len(images))
    pos = 0
    for kind, k in faults.items():
        for i in picks[pos:pos + k]:
            e_idx, num, _ = images[int(i)]
            fault_of[(e_idx, num)] = kind
        pos += k

    out.mkdir(parents=True, exist_ok=True)
    (out / "info.json").write_text(json.dumps(info_json(), indent=2))
    made_dirs: set[Path] = set()
    for e_idx, num, split in images:
        emotion = EMOTION[e_idx]
        image_id = f"{emotion}_{num:05d}"
        image_rel = f"image/{emotion}/{image_id}.jpg"
        ann_rel = f"annotation/{emotion}/{image_id}.json"
        for d in (out / "image" / emotion, out / "annotation" / emotion):
            if d not in made_dirs:
                d.mkdir(parents=True, exist_ok=True)
                made_dirs.add(d)

        img_rng = np.random.default_rng([seed, e_idx, num])
        latent = _draw_attributes(emotion, img_rng)
        annotation = {k: v for k, v in latent.items() if img_rng.random() >= ABSENT_P[k]}
        picture = _render(emotion, latent, img_rng)
        (out / image_rel).write_bytes(_encode(picture, fault_of.get((e_idx, num))))
        (out / ann_rel).write_text(json.dumps(annotation))
        split_entries[split].append([emotion, image_id, image_rel, ann_rel])

    for split in SPLIT_NAMES:
        entries = split_entries[split]
        shuffled = [entries[int(i)] for i in rng.permutation(len(entries))]
        (out / f"{split}.json").write_text(json.dumps(shuffled))
    return out


# --- planning -------------------------------------------------------------------------------------

def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise EmoError(f"synth_emoset: {name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_splits(splits) -> tuple[float, float, float]:
    try:
        values = tuple(float(x) for x in splits)
    except (TypeError, ValueError):
        raise EmoError(f"synth_emoset: splits must be 3 numbers (train, val, test), got {splits!r}") from None
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise EmoError(
            f"synth_emoset: splits must be 3 non-negative fractions (train, val, test) with a positive "
            f"sum, got {splits!r}"
        )
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _allocate(count: int, fractions, rotate: int = 0) -> list[int]:
    """Split `count` images by `fractions`; every positive split gets >= 1 when count allows.

    Ties in rounding go to a different split for each `rotate` value, so that over the emotions
    no split is systematically favoured.
    """
    positive = [i for i, f in enumerate(fractions) if f > 0]
    alloc = [0] * len(fractions)

    def pick(candidates, gap) -> int:  # the largest gap; ties broken by `rotate`
        best = max(gap(i) for i in candidates)
        tied = [i for i in candidates if gap(i) > best - 1e-9]
        return tied[rotate % len(tied)]

    if count < len(positive):  # too few: the largest fractions first (train before val before test)
        for i in sorted(positive, key=lambda i: (-fractions[i], i))[:count]:
            alloc[i] = 1
        return alloc
    target = [f * count for f in fractions]
    for i in positive:
        alloc[i] = max(1, int(np.floor(target[i] + 1e-9)))
    while sum(alloc) > count:  # take from the split most above its target that can spare one
        alloc[pick([i for i in positive if alloc[i] > 1], lambda i: alloc[i] - target[i])] -= 1
    while sum(alloc) < count:  # give to the split most below its target
        alloc[pick(positive, lambda i: target[i] - alloc[i])] += 1
    return alloc


def _pick(rng: np.random.Generator, preferred, vocab) -> str:
    if rng.random() < PREFERRED_P:
        return preferred[int(rng.integers(len(preferred)))]
    return vocab[int(rng.integers(len(vocab)))]


def _level(rng: np.random.Generator, mean: float, levels) -> float:
    """A 0.1-step value near `mean`, as the float the real annotations hold (e.g. 0.3)."""
    k = int(np.clip(np.rint(rng.normal(mean, 0.15) * 10), 0, 10))
    return float(levels[k])


def _draw_attributes(emotion: str, rng: np.random.Generator) -> dict:
    p = PROFILES[emotion]
    n_obj = int(rng.integers(1, 4))
    objects: list[str] = []
    while len(objects) < n_obj:
        name = _pick(rng, p["objects"], OBJECT)
        if name not in objects:
            objects.append(name)
    return {
        "scene": _pick(rng, p["scenes"], SCENE),
        "object": objects,
        "facial_expression": _pick(rng, p["faces"], FACIAL_EXPRESSION),
        "human_action": _pick(rng, p["actions"], HUMAN_ACTION),
        "brightness": _level(rng, p["brightness"], BRIGHTNESS),
        "colorfulness": _level(rng, p["colorfulness"], COLORFULNESS),
    }


# --- drawing --------------------------------------------------------------------------------------

def _rgb(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _shape(draw: ImageDraw.ImageDraw, kind: str, box, fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # stripes: three horizontal bars filling the box
        h = (y1 - y0) / 5
        for k in (0, 2, 4):
            draw.rectangle((x0, y0 + k * h, x1, y0 + (k + 1) * h), fill=fill)


def _render(emotion: str, latent: dict, rng: np.random.Generator) -> Image.Image:
    size = IMAGE_SIZE
    p = PROFILES[emotion]
    hue = p["hue"] + rng.normal(0, 4)
    val = 0.3 + 0.65 * latent["brightness"]
    sat = 0.35 + 0.6 * latent["colorfulness"]

    # background: the emotion's hue, a soft vertical gradient
    top = np.array(_rgb(hue, sat, val), dtype=np.float32)
    bottom = np.array(_rgb(hue + 10, sat * 0.85, val * 0.8), dtype=np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3))
    img = Image.fromarray(np.ascontiguousarray(canvas).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    # the scene: a large shape whose kind, place and colour follow the scene index
    s_idx = SCENE.index(latent["scene"])
    kind = SHAPES[s_idx % len(SHAPES)]
    half = 13 + (s_idx // 4) % 6 + rng.integers(-2, 3)
    cx = size / 2 + ((s_idx * 7) % 13 - 6) + rng.integers(-3, 4)
    cy = size / 2 + ((s_idx * 11) % 13 - 6) + rng.integers(-3, 4)
    shape_val = 0.25 if val > 0.6 else 0.95
    fill = _rgb(p["hue"] + 180 + (s_idx * 23) % 90 - 45, 0.75, shape_val)
    _shape(draw, kind, (cx - half, cy - half, cx + half, cy + half), fill)

    # the objects: small markers in the corners (first object top-left, then clockwise)
    corners = ((2, 2), (size - 16, 2), (size - 16, size - 16), (2, size - 16))
    for k, name in enumerate(latent["object"][:2]):
        o_idx = OBJECT.index(name)
        x, y = corners[(o_idx + k) % 4]
        x += int(rng.integers(0, 3))
        y += int(rng.integers(0, 3))
        _shape(draw, SHAPES[(o_idx // 4) % 4], (x, y, x + 12, y + 12), _rgb(o_idx * 47, 0.9, 0.9))

    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 5.0, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def _encode(img: Image.Image, fault: str | None) -> bytes:
    buf = io.BytesIO()
    if fault == "rgba":
        rgba = img.convert("RGBA")
        alpha = np.full((img.height, img.width), 255, dtype=np.uint8)
        alpha[: img.height // 4, :] = 0  # a transparent band: readers must composite, not drop alpha
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.save(buf, format="PNG")  # PNG bytes under a .jpg name: JPEG has no alpha channel
        return buf.getvalue()
    if fault == "grayscale":
        img = img.convert("L")
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    data = buf.getvalue()
    if fault == "corrupt":
        return data[: len(data) // 2]
    return data
