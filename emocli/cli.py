"""The `emo` command. Imports nothing heavy: each command imports what it needs when it runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from emocli import __version__
from emocli.commands import data, empathize, models, quickstart, recipes, sample, train, understand
from emocli.commands import eval as eval_commands
from emocli.errors import EmoError

app = typer.Typer(
    name="emo",
    help="emo: emotional image generation and understanding, from YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(recipes.app, name="recipes")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(eval_commands.app, name="eval")
app.add_typer(understand.app, name="understand")
app.command("sample")(sample.sample)
app.command("quickstart")(quickstart.quickstart)
app.command("empathize")(empathize.empathize)


def _version(value: bool):
    if value:
        typer.echo(f"emo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", help="Show library warnings and load reports (by default "
                                                          "they go to the run's log.txt or --log-file)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="PATH",
                                            help="Where library messages go for a command without a run."),
):
    if debug:
        os.environ["EMO_DEBUG"] = "1"
    from emocli import console

    console.start(verbose=verbose, log_file=log_file)


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("EMO_DEBUG") == "1"
    try:
        app()
    except EmoError as e:
        if debug:
            raise
        typer.echo(f"error: {e.message}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo("interrupted", err=True)
        sys.exit(130)
