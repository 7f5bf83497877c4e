"""`emo eval understanding [RECIPE] [key=value ...]`: registered in the `emo eval` group (commands/eval.py)."""

from __future__ import annotations

from typing import Optional

import typer


def understanding(
    args: Optional[list[str]] = typer.Argument(None, help="[RECIPE] [key.path=value | ~key.path ...]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and exit."),
):
    """Base VLM vs a GRPO-tuned run on the same saved test questions: accuracy per question type, 8-class
    accuracy and macro-F1, polarity accuracy, confusion matrices.

    Writes RUN/metrics.json, report.md, confusion_<model>.png/.json and predictions_<model>.jsonl.
    """
    from emocli.commands.train import execute, load_for_command

    recipe = load_for_command("eval-understanding", args or [])
    execute(recipe, resume=False, dry_run=dry_run)
