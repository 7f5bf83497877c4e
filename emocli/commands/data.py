"""`emo data synth | ...`: datasets in the exact official layouts."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(help="Prepare and synthesise datasets.", no_args_is_help=True)


class SynthDataset(str, Enum):
    emoset = "emoset"


@app.command()
def synth(
    dataset: SynthDataset = typer.Argument(..., help="Which dataset layout to write."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    n: int = typer.Option(..., "--n", min=1, help="Total number of images."),
    seed: int = typer.Option(0, "--seed"),
):
    """Write a small synthetic dataset in the exact official layout (real JPEGs and JSON files)."""
    from emocli.data.synth import synth_emoset

    path = synth_emoset(out, n=n, seed=seed)
    typer.echo(f"wrote synthetic {dataset.value} ({n} images) to {path}")
