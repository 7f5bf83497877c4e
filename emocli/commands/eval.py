"""`emo eval generation [RECIPE] [key=value ...] [--compare RUN_A RUN_B]`, `emo eval understanding`, `emo eval
explanation`, `emo eval empathy` (each `[RECIPE] [key=value ...]`) and `emo eval tiny-weights`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from emocli.commands import eval_understanding

app = typer.Typer(help="Evaluate from recipes: generated images (EmoGen, LDM), emotion understanding (VLMs), "
                  "art explanations (SEVLM) and empathetic replies (EmpathDiffuser).", no_args_is_help=True)


@app.command("generation")
def generation(
    args: Optional[list[str]] = typer.Argument(None, help="[RECIPE] [key.path=value | ~key.path ...]"),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, "--compare", metavar="RUN_A RUN_B",
        help="Print two eval runs' metrics side by side and exit (nothing is computed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit."),
):
    """EmoGen's Table 1 metrics (FID, LPIPS, Emo-A, Sem-C, Sem-D) + CLIP-I/CLIP-T of an `emo sample` folder.

    Writes RUN/metrics.json, report.md, report.html and plots/; features are cached per backbone.
    """
    if compare:
        from emocli.methods.eval_generation.report import compare_runs

        compare_runs(*compare)
        return
    from emocli.commands.train import execute, load_for_command

    recipe = load_for_command("eval-generation", args or [])
    execute(recipe, resume=False, dry_run=dry_run)


@app.command("tiny-weights")
def tiny_weights(
    out: Path = typer.Option(Path("models/tiny/metrics"), "--out", help="Folder for the weight files."),
    seed: int = typer.Option(0, "--seed"),
    clip_dim: int = typer.Option(32, "--clip-dim", min=1, help="Feature size of the Emo-A head (tiny CLIP: 32)."),
):
    """Random-weight Inception / AlexNet + LPIPS heads / ResNet-50s / Emo-A head for the tiny eval recipe."""
    from emocli.evaluation.tiny import make_tiny_metric_weights

    for key, path in make_tiny_metric_weights(out, seed=seed, clip_dim=clip_dim).items():
        typer.echo(f"models.{key}: {path}")


app.command("understanding")(eval_understanding.understanding)


@app.command("empathy")
def empathy(
    args: Optional[list[str]] = typer.Argument(None, help="[RECIPE] [key.path=value | ~key.path ...]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit."),
):
    """An EmpathDiffuser run on a prepared AvaMERG split: BLEU-1..4 (nltk, ED convention) + sacreBLEU + Dist-1/2
    of the replies, FID of the listener faces, speaker-emotion accuracy / macro-F1 / confusion.

    Writes RUN/metrics.json, report.md, report.html, predictions.jsonl and faces/.
    """
    from emocli.commands.train import execute, load_for_command

    recipe = load_for_command("eval-empathy", args or [])
    execute(recipe, resume=False, dry_run=dry_run)


@app.command("explanation")
def explanation(
    args: Optional[list[str]] = typer.Argument(None, help="[RECIPE] [key.path=value | ~key.path ...]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit."),
):
    """SEVLM on a prepared ArtEmis split: emotion accuracy (strict majority), BLEU-1..4, METEOR, ROUGE-L, CIDEr
    and sacreBLEU of the explanation (text after "because"), Unique and Metaphor rates, third-party reference rows.

    Writes RUN/metrics.json, predictions.jsonl, report.md, report.html and plots/confusion.png.
    """
    from emocli.commands.train import execute, load_for_command

    recipe = load_for_command("eval-explanation", args or [])
    execute(recipe, resume=False, dry_run=dry_run)
