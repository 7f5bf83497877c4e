"""`emo models make-tiny`: tiny random models saved as ordinary from_pretrained folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from emocli.errors import EmoError

app = typer.Typer(help="Model utilities.", no_args_is_help=True)
KINDS = ("sd", "clip", "resnet", "gpt2", "vlm", "unidiffuser")


@app.command("make-tiny")
def make_tiny(
    out: Path = typer.Option(..., "--out", help="Folder to write the tiny model folders into."),
    seed: int = typer.Option(0, "--seed"),
    only: Optional[str] = typer.Option(None, "--only", help=f"Comma-separated subset of {', '.join(KINDS)}."),
):
    """Write tiny Stable Diffusion, CLIP, ResNet, GPT-2, VLM and UniDiffuser folders (random weights, local tokenizers)."""
    which = tuple(KINDS if only is None else [k.strip() for k in only.split(",") if k.strip()])
    bad = [k for k in which if k not in KINDS]
    if bad:
        raise EmoError(f"unknown tiny model {bad[0]!r}; valid: {', '.join(KINDS)}")
    from emocli.testing.tiny import make_tiny as build

    for kind, path in build(out, seed=seed, which=which).items():
        typer.echo(f"{kind}: {path}")
