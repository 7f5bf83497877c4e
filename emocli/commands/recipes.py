"""`emo recipes list | show | cp | validate`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from emocli.errors import EmoError

app = typer.Typer(help="List, show, copy and validate recipes.", no_args_is_help=True)


def _description(path: Path) -> tuple[str, str]:
    from emocli.recipes.load import read_yaml

    data = read_yaml(path)
    return str(data.get("method", "?")), str(data.get("description") or "")


@app.command("list")
def list_cmd():
    """List the recipes shipped in recipes/ (alias: ls)."""
    from rich.console import Console
    from rich.table import Table

    from emocli.recipes.load import list_recipes

    table = Table(show_edge=False, box=None)
    table.add_column("recipe", style="bold")
    table.add_column("method")
    table.add_column("description")
    for name, path in list_recipes():
        method, desc = _description(path)
        table.add_row(name, method, desc)
    Console().print(table)


app.command("ls", hidden=True)(list_cmd)


@app.command()
def show(
    recipe: str = typer.Argument(..., help="Recipe name or path."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key.path=value or ~key.path"),
):
    """Print the resolved recipe (defaults filled in, overrides applied)."""
    from emocli.recipes.load import dump_recipe, load_recipe

    typer.echo(dump_recipe(load_recipe(recipe, overrides or [])), nl=False)


@app.command()
def cp(recipe: str = typer.Argument(..., help="Recipe name."), dest: Path = typer.Argument(...)):
    """Copy a shipped recipe to edit it."""
    from emocli.recipes.load import find_recipe

    src = find_recipe(recipe)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists():
        raise EmoError(f"{dest} already exists; not overwriting it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    typer.echo(f"copied {src} -> {dest}")


@app.command()
def validate(files: list[str] = typer.Argument(..., help="Recipe files or names.")):
    """Validate recipes against their method's schema."""
    from emocli.recipes.load import load_recipe

    for item in files:
        recipe = load_recipe(item)
        typer.echo(f"ok: {item} ({recipe.method})")
