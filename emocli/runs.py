"""Run directories: the resolved recipe, versions and launch command, checkpoints, resume.

Layout of a run directory:
    recipe.yaml         the resolved recipe (workers read only this file)
    versions.json       python, platform and package versions
    command.json        the command line and the launch command
    log.txt             the training log (rank 0)
    metrics.jsonl       one JSON object per logged step / evaluation
    run.lock            while a run writes here: its host, PID and start time (`run_lock`)
    checkpoints/step-N/ complete checkpoints; written as checkpoints/.step-N.tmp and renamed
    final/              exported weights (from_pretrained-loadable) and method artifacts

This module imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from emocli.errors import EmoError
from emocli.written import check_file

TRACKED_PACKAGES = ("emocli", "torch", "diffusers", "transformers", "accelerate", "deepspeed", "trl",
                    "datasets", "peft", "safetensors", "numpy", "pillow", "pydantic", "typer")
_STEP_DIR = re.compile(r"^step-(\d+)$")
LOCK_NAME = "run.lock"
log = logging.getLogger("emocli")


@dataclass
class Run:
    dir: Path
    recipe: object  # the method's pydantic recipe

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def final(self) -> Path:
        return self.dir / "final"

    @classmethod
    def open(cls, run_dir: str | Path) -> Run:
        """Reopen a run from its saved recipe (what workers and `emo sample --run` do)."""
        from emocli.recipes.load import load_recipe

        run_dir = Path(run_dir)
        if not (run_dir / "recipe.yaml").is_file():
            raise EmoError(f"{run_dir} is not an emo run directory (no recipe.yaml)")
        return cls(dir=run_dir, recipe=load_recipe(run_dir / "recipe.yaml"))


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolve_output_dir(recipe) -> Path:
    name = recipe.run.name or recipe.method
    return Path(recipe.run.output_dir.format(method=recipe.method, name=name)).expanduser()


def prepare_run(recipe, argv: list[str], resume: bool = False, launch_command: list[str] | None = None) -> Run:
    """Create (or reopen for --resume) the run directory and write everything before running."""
    from emocli.recipes.load import dump_recipe

    run_dir = resolve_output_dir(recipe)
    has_checkpoints = latest_checkpoint(run_dir) is not None
    if resume and not run_dir.is_dir():
        raise EmoError(f"--resume: run directory {run_dir} does not exist")
    if not resume and has_checkpoints:
        raise EmoError(
            f"run directory {run_dir} already has checkpoints; pass --resume to continue it, "
            f"or choose another directory with run.output_dir=..."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / "recipe.yaml").is_file():
        shutil.copyfile(run_dir / "recipe.yaml", run_dir / "recipe.previous.yaml")
    _write_atomic(run_dir / "recipe.yaml", dump_recipe(recipe))
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    _write_atomic(run_dir / "versions.json", json.dumps(info, indent=2))
    command = {"argv": argv, "launch": launch_command, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resume": resume}
    _write_atomic(run_dir / "command.json", json.dumps(command, indent=2))
    return Run(dir=run_dir, recipe=recipe)


def record_launch(run: Run, launch_command: list[str]) -> None:
    """Add the exact launch command to command.json."""
    path = run.dir / "command.json"
    command = json.loads(path.read_text()) if path.is_file() else {}
    command["launch"] = launch_command
    _write_atomic(path, json.dumps(command, indent=2))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    check_file(tmp, size=len(text.encode()))
    tmp.replace(path)


def write_json_atomic(path: Path, obj) -> None:
    _write_atomic(Path(path), json.dumps(obj, indent=2))


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (a `trainer_state.json` inside), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


@contextmanager
def run_lock(run_dir: Path):
    """One run directory, one writer: hold RUN/run.lock (host, PID, start time) for the block.

    A second launch into the same directory is refused in one line naming the holder; a lock left by a
    process of this host that is gone (or whose PID now belongs to a later process) is taken over with a
    warning. A holder on another host cannot be checked from here: the message says how to free it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    mine = {"host": platform.node(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "process_start": _process_start(os.getpid())}
    tmp = run_dir / f".{LOCK_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(mine))
    try:
        while True:
            try:
                os.link(tmp, path)  # atomic and exclusive, and the lock is never seen half-written
                break
            except FileExistsError:
                holder = _read_lock(path)
                if _alive(holder):
                    raise EmoError(
                        f"{run_dir} is in use by another run (host {holder.get('host')}, PID {holder.get('pid')}, "
                        f"started {holder.get('started')}); wait for it, or choose another run.output_dir=... "
                        f"(remove {path} only if that process is gone)") from None
                log.warning("taking over %s from a process that is gone (host %s, PID %s, started %s)",
                            path, holder.get("host"), holder.get("pid"), holder.get("started"))
                path.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if _read_lock(path).get("pid") == mine["pid"] and _read_lock(path).get("host") == mine["host"]:
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (Linux), which tells a reused PID apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the lock's holder may still run (another host's process always may)."""
    if not holder:
        return False  # unreadable: written by nothing that follows this protocol
    if holder.get("host") != platform.node():
        return True
    pid = holder.get("pid")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return isinstance(pid, int)
    start = holder.get("process_start")
    return start is None or start == _process_start(int(pid))
