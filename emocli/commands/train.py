"""`emo train METHOD [RECIPE] [key=value ...]`: one subcommand per registered method."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from emocli.registry import METHODS

app = typer.Typer(help="Train a method from a recipe (the method's default recipe when none is given).",
                  no_args_is_help=True)


def split_recipe_args(args: list[str]) -> tuple[str | None, list[str]]:
    """`[RECIPE] [key=value | ~key ...]`: the first argument is a recipe unless it is an override."""
    if args and "=" not in args[0] and not args[0].startswith("~"):
        return args[0], args[1:]
    return None, list(args)


def load_for_command(method_name: str, args: list[str], num_processes=None, accelerate_config=None):
    from emocli.recipes.load import load_recipe
    from emocli.registry import get_method

    method = get_method(method_name)
    recipe_name, overrides = split_recipe_args(args)
    recipe = load_recipe(recipe_name or method.default_recipe, overrides, expect_method=method.name)
    # Explicit flags win over the recipe and its overrides.
    if num_processes is not None:
        recipe.launch.num_processes = num_processes
    if accelerate_config is not None:
        recipe.launch.accelerate_config = accelerate_config
    return recipe


def execute(recipe, resume: bool = False, dry_run: bool = False) -> None:
    """Prepare the run directory, then run in-process or through `accelerate launch`."""
    from emocli.errors import EmoError
    from emocli.launch import (
        launch_command,
        needs_launcher,
        prebuild_deepspeed_cpu_ops,
        run_launched,
        uses_deepspeed,
        write_accelerate_config,
    )
    from emocli.recipes.load import dump_recipe
    from emocli.runs import prepare_run, record_launch, resolve_output_dir

    argv = ["emo", *sys.argv[1:]]
    launched = needs_launcher(recipe)
    if dry_run:
        typer.echo(dump_recipe(recipe), nl=False)
        run_dir = resolve_output_dir(recipe)
        if launched:
            typer.echo("# launch: " + " ".join(launch_command(recipe, run_dir, resume)))
        else:
            typer.echo("# launch: in-process (one process)")
        return
    from emocli.registry import get_method

    get_method(recipe.method).run_preflight(recipe)  # bad inputs fail before the run directory exists
    run = prepare_run(recipe, argv, resume=resume)
    if launched:
        config = write_accelerate_config(recipe, run.dir)
        cmd = launch_command(recipe, run.dir, resume, config)
        record_launch(run, cmd)
        if uses_deepspeed(config):
            prebuild_deepspeed_cpu_ops()
        typer.echo("launch: " + " ".join(cmd), err=True)
        code = run_launched(cmd)
        if code != 0:
            raise EmoError(f"the launched run failed (exit {code}); its log: {run.dir / 'log.txt'}",
                           exit_code=code if 0 < code < 256 else 1)
    else:
        from emocli.worker import run_method

        run_method(run.dir, resume)
    typer.echo(f"run: {run.dir}")


# The options of every recipe-driven run command (`emo train METHOD`, `emo understand grpo`).
RECIPE_ARGS = typer.Argument(None, help="[RECIPE] [key.path=value | ~key.path ...]")
RESUME = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint.")
NUM_PROCESSES = typer.Option(None, "--num-processes", min=1, help="Processes (GPUs); >1 launches through accelerate.")
ACCELERATE_CONFIG = typer.Option(None, "--accelerate-config",
                                 help="multi_cpu, single_gpu, multi_gpu, zero2, zero3, or a path.")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the resolved recipe and launch command.")


def _train_command(method_name: str):
    def command(
        args: Optional[list[str]] = RECIPE_ARGS,
        resume: bool = RESUME,
        num_processes: Optional[int] = NUM_PROCESSES,
        accelerate_config: Optional[str] = ACCELERATE_CONFIG,
        dry_run: bool = DRY_RUN,
    ):
        recipe = load_for_command(method_name, args or [], num_processes, accelerate_config)
        execute(recipe, resume=resume, dry_run=dry_run)

    command.__doc__ = METHODS[method_name].summary
    return command


for _name, _method in METHODS.items():
    if _method.command == "emo train":
        app.command(_name)(_train_command(_name))
