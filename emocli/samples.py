"""The generated-image layout every sampler writes and every evaluator reads.

    OUT/<emotion>/<name>.png    the image
    OUT/<emotion>/<name>.json   every parameter needed to reproduce it
    OUT/grid.png                one row per emotion (labelled), for a person to look at

Prompt-conditioned samplers (`emo sample --run LDM_RUN --prompt ...`) write instead:

    OUT/prompts/<name>.png      the image; <name> is <reference id or prompt number>_<k>
    OUT/prompts/<name>.json     prompt, seed, latent_seed, reference_id (the test record's id when the
                                prompts are a prepared caption test split, else null), sampler settings
    OUT/grid.png                one row per prompt (the first 8 prompts, labelled)

`SampleWriter` writes a run of samples into a staging folder next to OUT and moves them in only when
every image is written, so a failure (a full disk) leaves OUT as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

from emocli.errors import io_failed
from emocli.written import check_file, publish


def write_sample(out: Path, emotion: str, name: str, image: Image.Image, params: dict) -> Path:
    """One image and its sidecar; the sidecar first, so that every .png has its .json."""
    folder = Path(out) / emotion
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    (folder / f"{name}.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    image.save(path, format="PNG")
    check_file(path)  # before commit() publishes it
    return path


class SampleWriter:
    """Samples for OUT, staged in OUT/../.OUT.partial-PID and moved into OUT by `commit()` (then grid.png).

    Use as a context manager: an exception removes the staging folder; an OSError (disk full,
    permissions) becomes one EmoError naming the path and the cause.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.stage = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self.count = 0

    def __enter__(self) -> SampleWriter:
        try:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage.mkdir(parents=True)
        except OSError as e:
            raise io_failed(e, self.stage, "write samples to") from None
        return self

    def write(self, emotion: str, name: str, image: Image.Image, params: dict) -> Path:
        try:
            write_sample(self.stage, emotion, name, image, params)
        except OSError as e:
            raise io_failed(e, self.stage / emotion / f"{name}.png", "write sample",
                            f"nothing was added to {self.out}") from None
        self.count += 1
        return self.out / emotion / f"{name}.png"

    def commit(self, write_grid_to=None) -> Path:
        """Move the staged samples into OUT (same file system: renames) and write OUT/grid.png
        (`write_grid_to(out)`: another grid, e.g. `write_prompt_grid` for the prompt layout)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            for folder in sorted(p for p in self.stage.iterdir() if p.is_dir()):
                (self.out / folder.name).mkdir(exist_ok=True)
                for file in sorted(folder.iterdir(), key=lambda f: f.suffix != ".json"):  # sidecars first
                    file.replace(self.out / folder.name / file.name)
            return (write_grid_to or write_grid)(self.out)
        except OSError as e:
            raise io_failed(e, self.out, "write samples to") from None

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


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
    return save_png(grid(rows, cell=cell), Path(out) / "grid.png")


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` beside `path`, check it and rename it in: a full disk never leaves half a picture."""
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    publish(tmp, path)
    return path


PROMPT_FOLDER = "prompts"


def write_prompt_sample(writer: SampleWriter, name: str, image: Image.Image, params: dict) -> Path:
    """OUT/prompts/<name>.png + <name>.json through a SampleWriter; the sidecar needs at least prompt, seed and
    reference_id."""
    missing = [k for k in ("prompt", "seed", "reference_id") if k not in params]
    if missing:
        raise ValueError(f"prompt sample sidecar lacks {missing}")
    return writer.write(PROMPT_FOLDER, name, image, params)


def read_prompt_samples(out: Path) -> list[tuple[Path, dict]]:
    """[(png, sidecar)] of a prompt layout, sorted by name."""
    folder = Path(out) / PROMPT_FOLDER
    pairs = []
    for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        sidecar = png.with_suffix(".json")
        pairs.append((png, json.loads(sidecar.read_text()) if sidecar.is_file() else {}))
    return pairs


def write_prompt_grid(out: Path, max_rows: int = 8, max_per_row: int = 8) -> Path:
    rows: dict[str, list[Image.Image]] = {}
    for png, params in read_prompt_samples(out):
        prompt = str(params.get("prompt", png.stem))
        if prompt not in rows and len(rows) >= max_rows:
            continue
        images = rows.setdefault(prompt, [])
        if len(images) < max_per_row:
            images.append(Image.open(png))
    first = next((images[0] for images in rows.values() if images), None)
    cell = min(256, max(64, first.width if first else 128))
    return save_png(grid([(p[:36], images) for p, images in rows.items()], cell=cell, label_width=220),
                    Path(out) / "grid.png")
