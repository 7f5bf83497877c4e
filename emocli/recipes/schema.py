"""Sections shared by every recipe. Each method's recipe subclasses `Recipe` in its own package.

Every section forbids unknown keys, so a misspelled key is an error that names it, never a
silently ignored setting. This module imports pydantic only (no torch): recipes validate instantly.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class RunSection(Section):
    name: Optional[str] = None
    # `{method}` and `{name}` are filled in; a relative path is relative to the current directory.
    output_dir: str = "runs/{method}"
    seed: int = 0


class LaunchSection(Section):
    # Processes on this machine (one per GPU); the world size is num_processes x num_machines.
    num_processes: int = Field(1, ge=1)
    # A shipped config name (multi_cpu, single_gpu, multi_gpu, zero2, zero3) or a path to an
    # accelerate config YAML. None = one process, in-process.
    accelerate_config: Optional[str] = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Several machines (accelerate launch --num_machines ...): start the same command on every machine
    # with its own machine_rank; machine 0 hosts the rendezvous at main_process_ip:main_process_port and
    # writes the run directory, which must be on a filesystem every machine sees.
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0)
    main_process_ip: Optional[str] = None
    # null on one machine: a free port is picked.
    main_process_port: Optional[int] = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _machines(self):
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"launch.machine_rank={self.machine_rank} must be below launch.num_machines="
                             f"{self.num_machines} (ranks 0 to {self.num_machines - 1})")
        if self.num_machines > 1 and (not self.main_process_ip or self.main_process_port is None):
            raise ValueError(f"launch.num_machines={self.num_machines} needs launch.main_process_ip and "
                             f"launch.main_process_port (machine 0's address, the same on every machine)")
        return self

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines


class OptimSection(Section):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class EmaSection(Section):
    decay: float = Field(0.999, gt=0, lt=1)
    # The exported `best/` and `final/` weights are the EMA weights when true; evaluations (metrics,
    # best/ selection, preview grids) then score the EMA weights too.
    export: bool = Field(True, description="export the EMA weights to best/ and final/, and evaluate them")
    # Ramp the decay up as min(decay, (1 + t) / (10 + t)) at optimizer step t, so early weights fade quickly.
    # This is the formula diffusers' EMAModel uses with use_ema_warmup=False (its "warm-up" is a power law).
    warmup: bool = Field(False, description="decay min(decay, (1 + t) / (10 + t)) at step t (diffusers' "
                                            "EMAModel default, use_ema_warmup=False), not diffusers' power-law "
                                            "warm-up")


class TrainSection(Section):
    batch_size: int = Field(8, ge=1, description="per process")
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="optimizer steps; overrides epochs")
    clip_grad_norm: Optional[float] = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    eval_every: Optional[int] = Field(None, ge=1)
    checkpoint_every: Optional[int] = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    ema: Optional[EmaSection] = None
    num_workers: int = Field(0, ge=0)
    trackers: list[Literal["tensorboard", "trackio"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="tensorboard (RUN/tb) and/or trackio (local database; pip install 'emocli[trackio]', "
                    "view with `trackio show --project RUN_NAME`)")
    # Record which sample indices each process trained on (first epoch), for auditing sharding.
    audit_data: bool = False
    # Keep the best weights by a key of the dict `TrainTask.evaluate` returns (RUN/best/model).
    best_metric: Optional[str] = None
    best_mode: Literal["max", "min"] = "max"
    # Stop after this many evaluations without improvement of `best_metric`.
    early_stopping_patience: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _patience_needs_metric(self):
        if self.early_stopping_patience is not None and self.best_metric is None:
            raise ValueError("train.early_stopping_patience needs train.best_metric (the metric to watch)")
        return self


class Recipe(Section):
    """The base of every method recipe: `method` selects the schema."""

    method: str
    description: Optional[str] = None
    run: RunSection = Field(default_factory=RunSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)


class TrainRecipe(Recipe):
    """A recipe trained by the shared loop (`emocli.training.fit`)."""

    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
