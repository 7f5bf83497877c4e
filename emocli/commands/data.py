"""`emo data synth | prepare | alpha | import-emogen | stats`: datasets and their derived artifacts.

Every command imports what it needs when it runs (no torch / datasets at import time).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Prepare and synthesise datasets.", no_args_is_help=True)


class SynthDataset(str, Enum):
    emoset = "emoset"
    avamerg = "avamerg"
    captions = "captions"
    artemis = "artemis"


class PrepareDataset(str, Enum):
    emoset = "emoset"
    avamerg = "avamerg"
    captions = "captions"
    artemis = "artemis"


def _logging() -> None:
    from emocli.progress import setup_logging

    setup_logging(debug=False)


@app.command()
def synth(
    dataset: SynthDataset = typer.Argument(..., help="Which dataset layout to write."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    n: int = typer.Option(..., "--n", min=1, help="Total number of images (avamerg: speaker/listener pairs)."),
    seed: int = typer.Option(0, "--seed"),
):
    """Write a small synthetic dataset in the exact real layout: EmoSet (official release), ArtEmis (CSVs +
    WikiArt-style images), AvaMERG (JSON + media), or captioned shapes (train_info.json)."""
    if dataset is SynthDataset.artemis:
        from emocli.data.artemis_synth import synth_artemis

        path = synth_artemis(out, n=n, seed=seed)
        typer.echo(f"wrote synthetic artemis ({n} artworks, 5 annotations each; CSVs, wikiart/, "
                   f"synthetic-vad-lexicon.txt) to {path}")
        return
    if dataset == SynthDataset.captions:
        from emocli.data.captions import synth_captions

        path = synth_captions(out, n=n, seed=seed)
        typer.echo(f"wrote synthetic captions ({n} images) to {path}")
        return
    if dataset == SynthDataset.avamerg:
        from emocli.data.avamerg_synth import synth_avamerg

        path = synth_avamerg(out, n=n, seed=seed)
        typer.echo(f"wrote synthetic avamerg ({n} pairs; JSON in {path}, media in {path / 'media'})")
        return
    from emocli.data.synth import synth_emoset

    path = synth_emoset(out, n=n, seed=seed)
    typer.echo(f"wrote synthetic {dataset.value} ({n} images) to {path}")


@app.command()
def prepare(
    dataset: PrepareDataset = typer.Argument(..., help="Which dataset to prepare."),
    source: str = typer.Option(..., "--source", help="EmoSet: an official release folder, a parquet/JSONL export "
                               "(file or folder), a `datasets` saved folder, or a Hub dataset id. ArtEmis: "
                               "artemis_preprocessed.csv, or the release / v2 combined CSV. AvaMERG: the folder "
                               "holding train.json/test.json, or a Hub id. Captions: see docs/data.md."),
    images: Optional[Path] = typer.Option(None, "--images", help="ArtEmis only: the WikiArt image folder "
                                          "(<style>/<painting>.jpg)."),
    media: Optional[Path] = typer.Option(None, "--media", help="avamerg: folder of dia{conv}utt{idx}_{ID}.png/.mp4."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", min=0.0, max=0.9,
                                       help="avamerg: share of train conversations held out as val."),
    out: Path = typer.Option(..., "--out", help="Output folder (created; see docs/data.md)."),
    streaming: bool = typer.Option(False, "--streaming", help="Stream a Hub dataset instead of downloading it."),
    seed: Optional[int] = typer.Option(None, "--seed", help="EmoSet: seed of the balanced lists (default 0). "
                                       "ArtEmis release CSVs: seed of the split by artwork (default 2021)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only these splits (comma-separated)."),
    min_attribute_images: int = typer.Option(3, "--min-attribute-images", min=1,
                                             help="Fewest training images an attribute needs for the vocabulary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing prepared folder."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Threads that check images."),
    test_fraction: float = typer.Option(0.05, "--test-fraction", min=0.0, max=0.99,
                                        help="captions: images held out as the test split when the source "
                                        "has none."),
):
    """Prepare a dataset. emoset: canonical records, primary attributes, balanced lists, attribute vocabulary.
    artemis: per-artwork annotations and emotion histograms per split, the contrastive subset, COCO references.
    avamerg: speaker/listener pairs with frames and emotion labels, split by conversation. captions: train/test
    caption JSONL."""
    import json

    from emocli.errors import EmoError

    if dataset == PrepareDataset.captions:
        from emocli.data.captions import prepare_captions

        _logging()
        path = prepare_captions(source, out, streaming=streaming, seed=seed or 0, test_fraction=test_fraction,
                                overwrite=overwrite, workers=workers)
        manifest = json.loads((path / "prepare.json").read_text())
        counts, bad = manifest["counts"], manifest["bad_image_count"]
        typer.echo(f"prepared captions: {counts['total']} images "
                   f"({', '.join(f'{s} {k}' for s, k in counts['per_split'].items())}), {counts['captions']} "
                   f"captions, {bad} bad image{'s' * (bad != 1)} and {manifest['missing_caption_count']} "
                   f"uncaptioned skipped -> {path}")
        return

    if dataset == PrepareDataset.avamerg:
        from emocli.data.avamerg import prepare_avamerg

        if media is None:
            raise EmoError("emo data prepare avamerg needs --media DIR (the frames/videos dia{conv}utt{idx}_{ID})")
        _logging()
        path = prepare_avamerg(source, media, out, seed=seed or 0, val_fraction=val_fraction, overwrite=overwrite)
        manifest = json.loads((path / "prepare.json").read_text())
        counts = manifest["counts"]
        typer.echo(f"prepared avamerg: {counts['total']} pairs ({', '.join(f'{s} {n}' for s, n in counts['per_split'].items())}), "
                   f"{counts['frames_from_video']} frames from mp4, {manifest['bad_media_count']} bad media skipped -> {path}")
        return

    _logging()
    if dataset is PrepareDataset.artemis:
        from emocli.data.artemis import prepare_artemis

        if images is None:
            raise EmoError("emo data prepare artemis needs --images WIKIART_DIR (the <style>/<painting>.jpg folder)")
        path = prepare_artemis(Path(source), images, out, seed=2021 if seed is None else seed, overwrite=overwrite,
                               workers=workers)
        m = json.loads((path / "prepare.json").read_text())
        counts = m["counts"]
        typer.echo(f"prepared artemis ({m['source_format']} CSV): artworks "
                   f"{', '.join(f'{s} {n}' for s, n in counts['artworks'].items())}; contrastive train "
                   f"{counts['train_contrastive']}; missing images {m['missing_image_count']}, corrupt "
                   f"{m['corrupt_image_count']} (named in {path / 'prepare.json'}) -> {path}")
        return
    if images is not None:
        raise EmoError("--images is for ArtEmis only; EmoSet sources carry their images")
    from emocli.data.prepare import prepare_emoset

    path = prepare_emoset(source, out, streaming=streaming, seed=seed or 0, split=split,
                          min_attribute_images=min_attribute_images, overwrite=overwrite, workers=workers)
    manifest = json.loads((path / "prepare.json").read_text())
    counts = manifest["counts"]["per_split"]
    bad = manifest["bad_image_count"]
    typer.echo(f"prepared {dataset.value}: {manifest['counts']['total']} images "
               f"({', '.join(f'{s} {n}' for s, n in counts.items())}), {bad} bad image{'s' * (bad != 1)} "
               f"skipped; balanced scene {manifest['balanced']['scene']}, object {manifest['balanced']['object']} "
               f"-> {path}")


@app.command()
def alpha(
    prepared: Path = typer.Option(..., "--prepared", help="A folder written by `emo data prepare`."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="An `emo train emotion-classifier` run "
                                              "(or an emotion-encoder run with --scoring in-sample); without it "
                                              "alpha is the label frequency."),
    filter_threshold: Optional[float] = typer.Option(None, "--filter-threshold", help="Also write balanced "
                                                     "lists without images whose predicted emotion differs from "
                                                     "the label or whose score is <= T (needs --classifier)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    scoring: str = typer.Option("cross-fit", "--scoring", help="cross-fit: each image scored by a fold head "
                                "that never trained on it (the run's data.cross_fit_folds); in-sample: by the "
                                "classifier as it is."),
):
    """EmoGen's emotion confidence alpha per attribute (alpha.json, emotion_scores.jsonl)."""
    import json

    from emocli.data.alpha import compute_alpha

    _logging()
    path = compute_alpha(prepared, classifier=classifier, filter_threshold=filter_threshold, batch_size=batch_size,
                         scoring=scoring)
    data = json.loads(path.read_text())
    how = data["method"] + (f", {data['scoring']} scores" if data.get("scoring") else "")
    line = f"alpha ({how}): {len(data['scene'])} scene + {len(data['object'])} object attributes -> {path}"
    if "filter" in data:
        f = data["filter"]
        line += (f"; filter kept {f['kept']} of {f['images']} images (balanced scene {f['balanced']['scene']}, "
                 f"object {f['balanced']['object']})")
    typer.echo(line)


@app.command("import-emogen")
def import_emogen(
    repo: Path = typer.Option(..., "--repo", help="A checkout of the official EmoGen repository."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing import folder."),
):
    """Convert EmoGen's released artifacts (emotion space, alpha, attribute lists, CLIP head) to safe files."""
    import json

    from emocli.data.emogen_import import import_emogen as run

    _logging()
    path = run(repo, out, overwrite=overwrite)
    manifest = json.loads((path / "import.json").read_text())
    for name, what in manifest["written"].items():
        typer.echo(f"{name}: {what}")
    if manifest["missing"]:
        typer.echo(f"missing: {', '.join(manifest['missing'])}")
    typer.echo(f"-> {path}")


@app.command()
def stats(folder: Path = typer.Argument(..., help="A folder written by `emo data prepare`.")):
    """Images per split and emotion, attribute coverage and bad images of a prepared folder (ArtEmis: counts)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from emocli.emotions import EMOSET
    from emocli.errors import EmoError

    manifest_path = folder / "prepare.json"
    if not manifest_path.is_file():
        raise EmoError(f"{folder} is not a prepared folder (no prepare.json); make one with `emo data prepare`")
    try:
        m = json.loads(manifest_path.read_text())
        counts = m["counts"]
        splits = list(m["splits"]) if m.get("dataset") != "artemis" else []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EmoError(f"cannot read {manifest_path}: {e}") from None
    console = Console(soft_wrap=True)
    if m.get("dataset") == "artemis":
        console.print(f"[bold]{folder}[/bold]  ArtEmis from {m.get('source')} ({m.get('source_format')} CSV)")
        for kind in ("artworks", "annotations"):
            console.print(f"{kind}: " + ", ".join(f"{s} {n}" for s, n in counts[kind].items()))
        console.print(f"contrastive train artworks: {counts['train_contrastive']}; missing images "
                      f"{m['missing_image_count']}, corrupt {m['corrupt_image_count']} (listed in {manifest_path})")
        return
    console.print(f"[bold]{folder}[/bold]  source {m.get('source')} ({m.get('source_kind')}), seed {m.get('seed')}")

    table = Table(title="images per split and emotion")
    table.add_column("emotion")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for e in EMOSET.labels:
        table.add_row(e, *(str(counts["per_split_emotion"][s][e]) for s in splits), str(counts["per_emotion"][e]))
    table.add_row("[bold]all[/bold]", *(str(counts["per_split"][s]) for s in splits), str(counts["total"]))
    console.print(table)

    coverage = m.get("attribute_coverage", {})
    table = Table(title="primary attribute coverage (images)")
    table.add_column("split")
    for col in ("scene", "object", "none"):
        table.add_column(col, justify="right")
    for s in splits:
        c = coverage.get(s, {})
        table.add_row(s, *(str(c.get(col, 0)) for col in ("scene", "object", "none")))
    console.print(table)
    classes = m.get("attribute_classes", {})
    balanced = m.get("balanced", {})
    console.print(f"attributes over {', '.join(m.get('attribute_splits', []))}: {classes.get('scene', 0)} scene, "
                  f"{classes.get('object', 0)} object; balanced lists: scene {balanced.get('scene', 0)}, "
                  f"object {balanced.get('object', 0)}")
    if m.get("missing_fields"):
        console.print(f"[yellow]missing fields:[/yellow] {', '.join(m['missing_fields'])}")
    bad = m.get("bad_images", [])
    console.print(f"bad images: {m.get('bad_image_count', len(bad))}")
    for path in bad[:10]:
        console.print(f"  {path}: {m.get('bad_image_reasons', {}).get(path, '')}", markup=False, highlight=False)
    if len(bad) > 10:
        console.print(f"  ... and {len(bad) - 10} more (see {manifest_path})")
    alpha_path = folder / "alpha.json"
    if alpha_path.is_file():
        try:
            a = json.loads(alpha_path.read_text())
            console.print(f"alpha.json: {a.get('method')}, {len(a.get('scene', {}))} scene + "
                          f"{len(a.get('object', {}))} object attributes")
        except (OSError, ValueError):
            console.print(f"[red]alpha.json unreadable[/red] ({alpha_path})")
