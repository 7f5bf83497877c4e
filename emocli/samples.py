"""The generated-image layout every sampler writes and every evaluator reads.

    OUT/<emotion>/<name>.png    the image
    OUT/<emotion>/<name>.json   every parameter needed to reproduce it
    OUT/grid.png                one row per emotion (labelled), for a person to look at
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw


def write_sample(out: Path, emotion: str, name: str, image: Image.Image, params: dict) -> Path:
    folder = Path(out) / emotion
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    image.save(path, format="PNG")
    (folder / f"{name}.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    return path


def read_samples(out: Path) -> dict[str, list[Path]]:
    """{emotion: [png paths]} of a folder written by write_sample."""
    from emocli.emotions import EMOSET

    order = {name: i for i, name in enumerate(EMOSET.labels)}
    found: dict[str, list[Path]] = {}
    folders = [p for p in Path(out).iterdir() if p.is_dir()]
    for folder in sorted(folders, key=lambda p: (order.get(p.name, len(order)), p.name)):
        images = sorted(folder.glob("*.png"))
        if images:
            found[folder.name] = images
    return found


def grid(rows: list[tuple[str, list[Image.Image]]], cell: int = 128, label_width: int = 96) -> Image.Image:
    """A labelled grid: one row per (label, images)."""
    cols = max((len(images) for _, images in rows), default=1)
    canvas = Image.new("RGB", (label_width + cols * cell, max(1, len(rows)) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((6, r * cell + cell // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            canvas.paste(image.convert("RGB").resize((cell, cell), Image.BICUBIC), (label_width + c * cell, r * cell))
    return canvas


def write_grid(out: Path, max_per_row: int = 8, cell: int | None = None) -> Path:
    rows = [(emotion, [Image.open(p) for p in paths[:max_per_row]]) for emotion, paths in read_samples(out).items()]
    if cell is None:  # the images' own size, kept between 64 and 256 px
        first = next((images[0] for _, images in rows if images), None)
        cell = min(256, max(64, first.width if first else 128))
    path = Path(out) / "grid.png"
    grid(rows, cell=cell).save(path)
    return path
