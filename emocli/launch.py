"""How a run is executed: in-process for one process, else an explicit `accelerate launch`.

For several processes or DeepSpeed, the shipped (or given) accelerate config is copied into the
run directory with the recipe's process count, precision, accumulation and clipping filled in,
and the launched workers (`python -m emocli.worker RUN_DIR`) read only the run's saved recipe.
This module imports no torch.
"""

from __future__ import annotations

import os
import socket
import sys
from importlib import resources
from pathlib import Path

import yaml

from emocli.errors import EmoError

NAMED_CONFIGS = ("multi_cpu", "single_gpu", "multi_gpu", "zero2", "zero3")


def named_config_path(name_or_path: str) -> Path:
    if name_or_path in NAMED_CONFIGS:
        return Path(str(resources.files("emocli.launch_configs").joinpath(f"{name_or_path}.yaml")))
    path = Path(name_or_path)
    if not path.is_file():
        raise EmoError(
            f"accelerate config {name_or_path!r} is neither a shipped name ({', '.join(NAMED_CONFIGS)}) "
            f"nor an existing file"
        )
    return path


def needs_launcher(recipe) -> bool:
    launch = recipe.launch
    return launch.num_processes > 1 or launch.num_machines > 1 or launch.accelerate_config is not None


def config_name(recipe) -> str:
    """accelerate_config.yaml on machine 0; accelerate_config.machine<R>.yaml on the others (same run folder)."""
    rank = recipe.launch.machine_rank
    return "accelerate_config.yaml" if rank == 0 else f"accelerate_config.machine{rank}.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_accelerate_config(recipe, run_dir: Path) -> Path:
    """Copy the chosen config into the run, filled in from the recipe; return its path."""
    launch = recipe.launch
    name = launch.accelerate_config or "multi_cpu"
    config = yaml.safe_load(named_config_path(name).read_text()) or {}
    config["num_processes"] = launch.world_size  # accelerate counts the processes of all machines
    config["mixed_precision"] = launch.mixed_precision
    config["num_machines"] = launch.num_machines
    config["machine_rank"] = launch.machine_rank
    if launch.num_machines > 1:
        config["main_process_ip"] = launch.main_process_ip
        config["main_process_port"] = launch.main_process_port
    if config.get("distributed_type") == "DEEPSPEED":
        ds = config.setdefault("deepspeed_config", {})
        if launch.num_machines > 1:
            ds["deepspeed_multinode_launcher"] = "standard"  # torchrun on each machine, no pdsh/hostfile
        train = getattr(recipe, "train", None)
        if train is not None:
            ds["gradient_accumulation_steps"] = train.grad_accum
            if train.clip_grad_norm is not None:
                ds["gradient_clipping"] = train.clip_grad_norm
            else:
                ds.pop("gradient_clipping", None)
    if launch.world_size > 1 and config.get("distributed_type") == "NO":
        raise EmoError(f"accelerate config {name!r} is single-process, but launch.num_processes={launch.num_processes}"
                       f" x launch.num_machines={launch.num_machines}")
    path = Path(run_dir) / config_name(recipe)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def uses_deepspeed(config_path: Path) -> bool:
    return (yaml.safe_load(Path(config_path).read_text()) or {}).get("distributed_type") == "DEEPSPEED"


def prebuild_deepspeed_cpu_ops() -> None:
    """On a machine without GPUs DeepSpeed JIT-compiles a shared-memory communication op the first
    time a process group starts. Build it once here, before the workers start, instead of in every
    worker at the same moment."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        return
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        builder.load(verbose=False)


def launch_command(recipe, run_dir: Path, resume: bool, config_path: Path | None = None) -> list[str]:
    launch = recipe.launch
    config_path = config_path or Path(run_dir) / config_name(recipe)
    port = launch.main_process_port or _free_port()
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_path),
        "--num_processes", str(launch.world_size),
        "--main_process_port", str(port),
    ]
    if launch.num_machines > 1:
        cmd += ["--num_machines", str(launch.num_machines), "--machine_rank", str(launch.machine_rank),
                "--main_process_ip", launch.main_process_ip]
    cmd += ["-m", "emocli.worker", str(run_dir)]
    if resume:
        cmd.append("--resume")
    return cmd


def wait_for_run(recipe, resume: bool, timeout_s: float = 600.0):
    """On machines other than 0: the run directory machine 0 prepares (a shared filesystem), once its
    recipe.yaml is there. Returns the Run; the workers read that saved recipe."""
    import time

    from emocli.runs import Run, resolve_output_dir

    run_dir = resolve_output_dir(recipe)
    recipe_file = run_dir / "recipe.yaml"
    deadline = time.monotonic() + timeout_s
    while not recipe_file.is_file():
        if time.monotonic() > deadline:
            raise EmoError(f"machine {recipe.launch.machine_rank}: machine 0 has not prepared {run_dir} within "
                           f"{timeout_s:.0f} s; start machine 0 too, and put run.output_dir on a filesystem "
                           f"every machine sees")
        time.sleep(0.5)
    if resume and not run_dir.is_dir():
        raise EmoError(f"--resume: run directory {run_dir} does not exist")
    return Run(dir=run_dir, recipe=recipe)


def run_launched(cmd: list[str]) -> int:
    """Run the launcher in the foreground; Ctrl-C reaches the workers, which save and exit."""
    import subprocess

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Workers must not each grab every core: one thread per process unless the user says otherwise.
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return proc.wait()
