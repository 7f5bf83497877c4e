"""`emo train METHOD [RECIPE] [key=value ...]`: one subcommand per registered method."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from emocli.errors import EmoError
from emocli.registry import METHODS

app = typer.Typer(help="Train a method from a recipe (the method's default recipe when none is given).",
                  no_args_is_help=True)


def split_recipe_args(args: list[str]) -> tuple[str | None, list[str]]:
    """`[RECIPE] [key=value | ~key ...]`: the first argument is a recipe unless it is an override."""
    if args and "=" not in args[0] and not args[0].startswith("~"):
        return args[0], args[1:]
    return None, list(args)


def load_for_command(method_name: str, args: list[str], num_processes=None, accelerate_config=None,
                     machines: dict | None = None):
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
    given = {k: v for k, v in (machines or {}).items() if v is not None}
    if given:
        from pydantic import ValidationError

        from emocli.recipes.schema import LaunchSection

        try:  # validated together: machine_rank < num_machines, an address with several machines
            recipe.launch = LaunchSection(**{**recipe.launch.model_dump(), **given})
        except ValidationError as e:
            raise EmoError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return recipe


def execute(recipe, resume: bool = False, dry_run: bool = False) -> None:
    """Prepare the run directory, then run in-process or through `accelerate launch`."""
    from emocli.errors import EmoError
    from emocli.launch import launch_command, needs_launcher
    from emocli.recipes.load import dump_recipe
    from emocli.runs import prepare_run, resolve_output_dir, run_lock

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
    if recipe.launch.machine_rank > 0:
        from emocli.launch import wait_for_run

        run = wait_for_run(recipe, resume)  # machine 0 prepares the (shared) run directory and holds its lock
        _run(recipe, run, resume, launched)
        return
    run_dir = resolve_output_dir(recipe)
    if resume and not run_dir.is_dir():
        raise EmoError(f"--resume: run directory {run_dir} does not exist")
    with run_lock(run_dir):  # for the run's life: a second launch into run_dir is refused
        _run(recipe, prepare_run(recipe, argv, resume=resume), resume, launched)


def _run(recipe, run, resume: bool, launched: bool) -> None:
    """Run in-process or through `accelerate launch` (the caller holds the run directory's lock)."""
    from emocli import console
    from emocli.errors import EmoError
    from emocli.launch import (
        launch_command,
        prebuild_deepspeed_cpu_ops,
        run_launched,
        uses_deepspeed,
        write_accelerate_config,
    )
    from emocli.runs import record_launch

    console.attach(run.dir / "log.txt")  # the library messages of this process (emocli/console.py)
    if launched:
        config = write_accelerate_config(recipe, run.dir)
        cmd = launch_command(recipe, run.dir, resume, config)
        if recipe.launch.machine_rank == 0:
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
NUM_MACHINES = typer.Option(None, "--num-machines", min=1, help="Machines in the run (start the command on each).")
MACHINE_RANK = typer.Option(None, "--machine-rank", min=0, help="This machine's rank (0 hosts the rendezvous).")
MAIN_PROCESS_IP = typer.Option(None, "--main-process-ip", help="Machine 0's address, reachable from every machine.")
MAIN_PROCESS_PORT = typer.Option(None, "--main-process-port", min=1, max=65535,
                                 help="Machine 0's rendezvous port (the same on every machine).")


def machine_options(num_machines, machine_rank, main_process_ip, main_process_port) -> dict:
    return {"num_machines": num_machines, "machine_rank": machine_rank, "main_process_ip": main_process_ip,
            "main_process_port": main_process_port}


def _train_command(method_name: str):
    def command(
        args: Optional[list[str]] = RECIPE_ARGS,
        resume: bool = RESUME,
        num_processes: Optional[int] = NUM_PROCESSES,
        accelerate_config: Optional[str] = ACCELERATE_CONFIG,
        dry_run: bool = DRY_RUN,
        num_machines: Optional[int] = NUM_MACHINES,
        machine_rank: Optional[int] = MACHINE_RANK,
        main_process_ip: Optional[str] = MAIN_PROCESS_IP,
        main_process_port: Optional[int] = MAIN_PROCESS_PORT,
    ):
        recipe = load_for_command(method_name, args or [], num_processes, accelerate_config,
                                  machine_options(num_machines, machine_rank, main_process_ip, main_process_port))
        execute(recipe, resume=resume, dry_run=dry_run)

    command.__doc__ = METHODS[method_name].summary
    return command


for _name, _method in METHODS.items():
    if _method.command == "emo train":
        app.command(_name)(_train_command(_name))
