"""The one training loop every method uses.

A method describes *what* to train as a `TrainTask` (the trainable module, the data, the loss,
how to export weights); `fit` does the rest, once for all methods: accelerate (one process,
DDP or DeepSpeed), mixed precision, gradient accumulation, clipping, LR schedule, optional EMA,
progress, trackers, a validation hook, atomic checkpoints with resume, clean exit on
SIGINT/SIGTERM, and a stop with a clear message on a non-finite loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from emocli.errors import EmoError, io_failed
from emocli.progress import setup_logging, step_progress
from emocli.runs import Run, latest_checkpoint, list_checkpoints, write_json_atomic
from emocli.written import check_tree

log = logging.getLogger("emocli")


class TrainingInterrupted(EmoError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=130)


class TrainingDiverged(EmoError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


class TrainTask:
    """What a method trains. Subclasses set `model` and `train_dataset` and implement `loss`."""

    model: torch.nn.Module  # what the optimizer updates and checkpoints hold (trainable parts only)
    train_dataset: torch.utils.data.Dataset
    collate_fn = None
    # Set by `fit` before every `loss` call: optimizer steps completed so far, and the 0-based epoch
    # (a method can switch a loss term on at a given epoch).
    step: int = 0
    epoch: int = 0

    def param_groups(self, model) -> list[dict] | None:
        """Optimizer parameter groups with their own "lr" (e.g. a module trained faster); None: one group
        at optim.lr. The LR schedule scales every group alike."""
        return None

    def setup(self, accelerator) -> None:
        """Move frozen components to the device / dtype (called once, before training)."""

    def train_mode(self, model) -> None:
        """Put `model` (as prepared by accelerate) in training mode: `fit` calls it before the first
        step and after each evaluation, since `from_pretrained` returns modules in eval mode (frozen
        BatchNorm statistics, no dropout, no gradient checkpointing). Override to keep frozen parts in
        eval mode."""
        model.train()

    def loss(self, model, batch) -> torch.Tensor | tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def evaluate(self, model, accelerator, step: int) -> dict | None:
        """Validation hook, called on every process every `train.eval_every` steps and at the end."""
        return None

    def save_pretrained(self, model, directory: Path, state_dict: dict | None = None) -> None:
        """Export trained weights (rank 0 only) so that they load with a from_pretrained call."""
        raise NotImplementedError

    def finish(self, model, accelerator, run: Run) -> None:
        """After training, on every process (e.g. compute the emotion space); rank 0 writes."""


@dataclass
class FitResult:
    step: int
    model: torch.nn.Module  # unwrapped, final weights (EMA weights when exported)
    final_dir: Path
    last_loss: float | None


def make_accelerator(run: Run):
    """The Accelerator for a run: gloo when there is no GPU, seeded samplers, trackers."""
    from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
    from accelerate.utils import ProjectConfiguration, set_seed

    recipe = run.recipe
    kwargs_handlers, cpu = [], False
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Without a GPU accelerate picks no backend and each process trains alone (LAUNCH-NOTES.md):
        # name gloo, and for plain data parallelism ask for CPU processes (DistributedType.MULTI_CPU).
        kwargs_handlers.append(InitProcessGroupKwargs(backend="gloo"))
        cpu = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true"
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # One process may run several recipes in a row (quickstart, tests), each with its own
        # precision: forget the previous run's accelerator settings (not the process group).
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    train = getattr(recipe, "train", None)
    # Through accelerate's trackers: tensorboard writes under RUN/tb, trackio into its local database
    # (TRACKIO_DIR, by default ~/.cache/huggingface/trackio), one project per run name, one run per run folder.
    log_with = [name for name in (train.trackers if train is not None else []) if _has_module(name)] or None
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=recipe.launch.mixed_precision,
        gradient_accumulation_steps=train.grad_accum if train is not None else 1,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run.dir), logging_dir=str(run.dir / "tb")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=kwargs_handlers,
    )
    setup_logging(run.dir, accelerator.is_main_process)
    set_seed(recipe.run.seed)
    return accelerator


def weight_dtype(accelerator) -> torch.dtype:
    """The dtype for frozen components under the run's mixed precision."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class _Ema:
    """Exponential moving average of the trainable parameters (fp32 shadow copy).

    With `warmup` the decay at optimizer step t is min(decay, (1 + t) / (10 + t)), so the average forgets
    the random initialisation quickly instead of over ~1/(1 - decay) steps. diffusers' EMAModel uses the
    same (1 + t) / (10 + t) ramp when `use_ema_warmup=False`; its "warm-up" is another, power-law formula.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        self.decay = decay
        self.warmup = warmup
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Average in the weights after optimizer step `step` (0-based: the first update uses decay_at(0))."""
        decay = self.decay_at(step)
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)

    def state_dict_over(self, state_dict: dict) -> dict:
        merged = dict(state_dict)
        for name, value in self.shadow.items():
            if name in merged:
                merged[name] = value.to(merged[name].dtype)
        return merged

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The shadow in `model`'s parameters for the block, the trained weights back after it (exactly:
        the optimizer continues from them). The raw copy waits on the CPU, not in accelerator memory."""
        raw = {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.shadow:
                    raw[name] = param.detach().to("cpu", copy=True)
                    param.copy_(self.shadow[name].to(param.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in raw:
                        param.copy_(raw[name].to(param.device))


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step and exits."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        # No logging here: a handler runs between two bytecodes of the main thread, possibly inside a
        # log call writing the same stream, and a re-entrant write fails ("Logging error" + traceback).
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def fit(task: TrainTask, run: Run, accelerator, resume: bool = False) -> FitResult:
    """Train `task` in the run directory: setup, resume, steps (evaluating and saving on the way), finish."""
    loop = _Loop(task, run, accelerator)
    if resume:
        loop.resume()
    loop.train()
    return loop.finish()


class _Loop:
    """One training run, in named phases. The attributes are the state the phases share; what a checkpoint
    stores (step, epoch, position in the epoch, the best tracker, stopped_early, evaluated) is among them."""

    def __init__(self, task: TrainTask, run: Run, accelerator):
        """Setup: optimizer, data loader, LR schedule, EMA, best tracker, trackers, all prepared by accelerate."""
        from transformers import get_scheduler

        self.task, self.run, self.accelerator = task, run, accelerator
        self.train_cfg, optim = run.recipe.train, run.recipe.optim
        self.is_main = accelerator.is_main_process
        log.info("accelerate: %s, %d process(es), device %s, mixed precision %s",
                 accelerator.distributed_type.value, accelerator.num_processes, accelerator.device,
                 accelerator.mixed_precision)
        model = task.model
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise EmoError("the model has no trainable parameters")
        optimizer = torch.optim.AdamW(task.param_groups(model) or self.params, lr=optim.lr, betas=tuple(optim.betas),
                                      eps=optim.eps, weight_decay=optim.weight_decay)
        task.setup(accelerator)  # frozen parts to the device; may build train_dataset (precomputed features)
        train = self.train_cfg
        loader = torch.utils.data.DataLoader(
            task.train_dataset, batch_size=train.batch_size, shuffle=True, collate_fn=task.collate_fn,
            num_workers=train.num_workers, generator=torch.Generator().manual_seed(run.recipe.run.seed),
            drop_last=False,
        )
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        steps_per_epoch = max(1, math.ceil(len(self.loader) / train.grad_accum))
        self.max_steps = train.max_steps or steps_per_epoch * train.epochs
        # Stepped once per optimizer step by us (not through accelerate, which would step it once
        # per process), so the schedule is the same whatever the number of processes.
        self.scheduler = get_scheduler(optim.scheduler, optimizer=_base_optimizer(self.optimizer),
                                       num_warmup_steps=optim.warmup_steps, num_training_steps=self.max_steps)
        accelerator.register_for_checkpointing(self.scheduler)
        self.ema = _Ema(accelerator.unwrap_model(self.model), train.ema.decay, train.ema.warmup) if train.ema else None
        self.exported_ema = self.ema if self.ema is not None and train.ema.export else None  # what is evaluated
        self.best = _BestTracker(run, train)
        self.metrics_path = run.dir / "metrics.jsonl"
        self.step, self.epoch, self.skip_batches, self.position = 0, 0, 0, 0
        self.evaluated_at: int | None = None  # the step whose evaluation has already run
        self.stopped_early = False
        self.last_loss: float | None = None
        self.resumed = False  # a tracker run of this name is continued, not started anew

    def resume(self) -> None:
        """Continue from the newest complete checkpoint: weights, optimizer, RNG, EMA, position, best tracker."""
        ckpt = latest_checkpoint(self.run.dir)
        self.resumed = ckpt is not None
        if ckpt is None:
            log.info("--resume: no complete checkpoint in %s; starting from step 0", self.run.checkpoints)
            return
        train = self.train_cfg
        state, self.skip_batches = _load_checkpoint(ckpt, self.accelerator, self.ema)
        self.position = self.skip_batches
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.best.load_state(state.get("best"))
        self.stopped_early = bool(state.get("stopped_early", False))
        # Checkpoints without the flag: the loop evaluates a step before checkpointing it.
        evaluated = state.get("evaluated", bool(train.eval_every and self.step % train.eval_every == 0
                                                and self.step < self.max_steps))
        self.evaluated_at = self.step if evaluated else None
        if self.is_main:  # the final evaluation of a finished run runs again below unless it ran before the save
            redo_eval = not evaluated and (self.step >= self.max_steps or self.stopped_early)
            _truncate_metrics(self.metrics_path, self.step, keep_eval_at_step=not redo_eval)
        log.info("resumed from %s (step %d, epoch %d, %d batches into the epoch)", ckpt, self.step, self.epoch,
                 self.skip_batches)

    def train(self) -> None:
        """Optimizer steps until max_steps, an early stop or a signal (which saves and raises)."""
        accelerator, train = self.accelerator, self.train_cfg
        if self.step >= self.max_steps or self.stopped_early:
            log.info("already at step %d of %d%s: nothing to train", self.step, self.max_steps,
                     " (stopped early)" if self.stopped_early else "")
        if accelerator.trackers == [] and accelerator.log_with:
            accelerator.init_trackers(self.run.recipe.run.name or self.run.recipe.method,
                                      init_kwargs={"trackio": {"name": self.run.dir.name,
                                                              "resume": "allow" if self.resumed else "never"}})
        self.audit: list[int] = []
        self.audit_epoch = self.epoch
        self.task.train_mode(self.model)
        self.t_last, self.logged_step = time.perf_counter(), self.step
        self.micro, self.loss_sum = 0, torch.zeros((), device=accelerator.device)
        with _StopFlag() as stop, step_progress(self.max_steps, f"train {self.run.recipe.method}",
                                                enabled=self.is_main, every=train.log_every, start=self.step) as bar:
            while self.step < self.max_steps and not self.stopped_early:
                if hasattr(self.loader, "set_epoch"):
                    self.loader.set_epoch(self.epoch)
                skip = self.skip_batches
                batches = accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
                self.position = skip
                for batch in batches:
                    self.position += 1
                    if self.micro_step(batch) and self.after_step(stop, bar):
                        return
                self.epoch, self.skip_batches, self.position = self.epoch + 1, 0, 0

    def micro_step(self, batch) -> bool:
        """Forward and backward on one batch (the optimizer steps when accumulation allows). True after an
        optimizer step."""
        accelerator, train, task = self.accelerator, self.train_cfg, self.task
        if train.audit_data and self.epoch == self.audit_epoch and isinstance(batch, dict) and "index" in batch:
            self.audit.extend(int(i) for i in batch["index"])
        task.step, task.epoch = self.step, self.epoch
        with accelerator.accumulate(self.model):
            with accelerator.autocast():
                loss, self.logs = _unpack(task.loss(self.model, batch) if batch is not None else None, self.params)
            accelerator.backward(loss)
            if accelerator.sync_gradients and train.clip_grad_norm is not None:
                accelerator.clip_grad_norm_(self.model.parameters(), train.clip_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach().float()
        self.micro += 1
        return accelerator.sync_gradients

    def after_step(self, stop: _StopFlag, bar) -> bool:
        """After an optimizer step: schedule, EMA, loss check, log, evaluate and save when due. True: stop."""
        accelerator, train = self.accelerator, self.train_cfg
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(accelerator.unwrap_model(self.model), self.step)
        self.step += 1
        step = self.step
        mean_loss = accelerator.reduce(self.loss_sum / self.micro, reduction="mean").item()
        self.loss_sum.zero_()
        self.micro = 0
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss became {mean_loss} at step {step}; stopped without saving. Last good "
                f"checkpoint: {latest_checkpoint(self.run.dir) or 'none'}. Try a lower optim.lr or set "
                f"train.clip_grad_norm"
            )
        self.last_loss = mean_loss
        lr = self.scheduler.get_last_lr()[0]
        bar.update(info=f"loss {mean_loss:.4f} lr {lr:.2e}")
        if step % train.log_every == 0 or step == self.max_steps:
            self.log_step(mean_loss, lr)
        if train.eval_every and step % train.eval_every == 0 and step < self.max_steps:
            self.evaluate(then_train=True)
        interrupted = _any_process(accelerator, stop.signal is not None)
        if interrupted and stop.signal is not None:
            log.warning("received %s: saving a checkpoint at step %d", signal.Signals(stop.signal).name, step)
        if (train.checkpoint_every and step % train.checkpoint_every == 0) or interrupted or self.stopped_early:
            self.save()
        if interrupted:
            raise TrainingInterrupted(
                f"interrupted at step {step}; checkpoint saved in {self.run.checkpoints / f'step-{step}'}. "
                f"Continue with the same command and --resume"
            )
        if self.stopped_early:
            log.info("early stopping at step %d: %s has not improved for %d evaluations (best %s at step %d)",
                     step, train.best_metric, train.early_stopping_patience, self.best.value, self.best.step)
        return self.stopped_early or step >= self.max_steps

    def log_step(self, mean_loss: float, lr: float) -> None:
        """One line of metrics.jsonl (rank 0) and the trackers."""
        now = time.perf_counter()
        record = {"step": self.step, "epoch": self.epoch, "loss": mean_loss, "lr": lr,
                  "steps_per_s": (self.step - self.logged_step) / max(now - self.t_last, 1e-9),
                  **{k: float(v) for k, v in (self.logs or {}).items()}}
        self.t_last, self.logged_step = now, self.step
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.step)
        if self.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def evaluate(self, then_train: bool) -> None:
        """The validation hook on the exported weights (back in train mode when training goes on); best/
        export and the early-stopping count."""
        result = _evaluate(self.task, self.model, self.accelerator, self.step, self.metrics_path, self.exported_ema)
        if then_train:
            self.task.train_mode(self.model)
        self.stopped_early = self.best.update(result, self.step, self.accelerator, self.model, self.task, self.ema)
        self.evaluated_at = self.step

    def save(self) -> None:
        """checkpoints/step-N with the state a resume needs."""
        save_checkpoint(self.run, self.accelerator, self.model, self.task, self.ema, self.step, self.epoch,
                        self.position, self.train_cfg.keep_checkpoints,
                        state={"best": self.best.state(), "stopped_early": self.stopped_early,
                               "evaluated": self.evaluated_at == self.step})

    def finish(self) -> FitResult:
        """The data audit, the last checkpoint and evaluation, final/ (EMA weights when exported), task.finish."""
        from accelerate.utils import gather_object

        accelerator, run, step = self.accelerator, self.run, self.step
        if self.train_cfg.audit_data:
            shards = gather_object([self.audit])
            if self.is_main:
                write_json_atomic(run.dir / "audit_data.json", {"epoch": self.audit_epoch, "ranks": shards})
        if latest_checkpoint(run.dir) is None or not (run.checkpoints / f"step-{step}").is_dir():
            self.save()
        if self.evaluated_at != step:  # an early stop has just evaluated this step
            stopped_early = self.stopped_early
            self.evaluate(then_train=False)
            self.stopped_early = stopped_early

        accelerator.wait_for_everyone()
        state_dict = accelerator.get_state_dict(self.model)
        if self.exported_ema is not None:
            state_dict = self.exported_ema.state_dict_over(state_dict)
        unwrapped = accelerator.unwrap_model(self.model)
        if self.exported_ema is not None:
            unwrapped.load_state_dict(state_dict, strict=False)
        if self.is_main:
            _write_folder(run.final, lambda tmp: self.task.save_pretrained(unwrapped, tmp / "model",
                                                                           state_dict=state_dict),
                          "write the final weights", f"the checkpoint {latest_checkpoint(run.dir)} is complete: "
                          f"free space and rerun the same command with --resume")
        accelerator.wait_for_everyone()
        self.task.finish(unwrapped, accelerator, run)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if self.is_main:
            log.info("done: step %d, final weights in %s", step, run.final)
        return FitResult(step=step, model=unwrapped, final_dir=run.final, last_loss=self.last_loss)


def _base_optimizer(optimizer):
    """The torch optimizer under accelerate's (and DeepSpeed's) wrappers."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return getattr(inner, "optimizer", inner) if not isinstance(inner, torch.optim.Optimizer) else inner


def _unpack(out, params):
    if out is None:  # every image of the batch was unreadable: a zero loss keeps processes in step
        return sum(p.sum() for p in params) * 0.0, {}
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, {}


def _any_process(accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _evaluate(task, model, accelerator, step, metrics_path: Path, ema: _Ema | None = None) -> dict | None:
    """Run the validation hook in eval mode (the caller puts the model back in training mode).

    With `ema` (EMA weights exported) the hook sees the EMA weights: metrics, `best/` selection and
    preview grids are those of the weights `best/` and `final/` hold, not of the raw ones."""
    model.eval()
    swap = ema.swapped_in(accelerator.unwrap_model(model)) if ema is not None else contextlib.nullcontext()
    with torch.no_grad(), swap:
        result = task.evaluate(model, accelerator, step)
    if result:
        accelerator.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)
        if accelerator.is_main_process:
            log.info("eval at step %d: %s", step, ", ".join(
                f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, (int, float))))
            with metrics_path.open("a") as f:
                f.write(json.dumps({"step": step, "eval": result}) + "\n")
    return result


class _BestTracker:
    """`train.best_metric`: export the best weights to RUN/best/ and count evaluations without improvement.

    Rank 0's evaluation result decides (broadcast), so every process takes the same decision.
    """

    def __init__(self, run: Run, train):
        self.run, self.metric, self.mode = run, train.best_metric, train.best_mode
        self.patience = train.early_stopping_patience
        self.value: float | None = None
        self.step: int | None = None
        self.bad_evals = 0

    @property
    def path(self) -> Path:
        return self.run.dir / "best"

    def state(self) -> dict | None:
        """What a checkpoint stores, so that a resumed run continues the same count."""
        if not self.metric:
            return None
        return {"metric": self.metric, "value": self.value, "step": self.step, "bad_evals": self.bad_evals}

    def load_state(self, state: dict | None) -> None:
        """On resume: the tracker as it was when the checkpoint was written (not RUN/best/, which may
        hold an evaluation after it)."""
        if self.metric and state and state.get("metric") == self.metric:
            self.value, self.step, self.bad_evals = state["value"], state["step"], int(state["bad_evals"])

    def update(self, result, step, accelerator, model, task, ema) -> bool:
        """Record one evaluation; export if it improved. Returns True when training should stop."""
        if not self.metric:
            return False
        from accelerate.utils import broadcast_object_list

        value = None
        if accelerator.is_main_process:
            if not result or self.metric not in result:
                raise EmoError(f"train.best_metric {self.metric!r} is not among the evaluation's results: "
                               f"{sorted(result or {})}")
            value = float(result[self.metric])
        if accelerator.num_processes > 1:
            value = broadcast_object_list([value])[0]
        improved = self.value is None or (value > self.value if self.mode == "max" else value < self.value)
        if improved:
            self.value, self.step, self.bad_evals = value, step, 0
            self._export(accelerator, model, task, ema, step)
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def _export(self, accelerator, model, task, ema, step) -> None:
        state_dict = accelerator.get_state_dict(model)  # every process (DeepSpeed ZeRO-3 gathers)
        if ema is not None and self.run.recipe.train.ema.export:
            state_dict = ema.state_dict_over(state_dict)
        if accelerator.is_main_process:
            def write(tmp: Path) -> None:
                task.save_pretrained(accelerator.unwrap_model(model), tmp / "model", state_dict=state_dict)
                write_json_atomic(tmp / "best.json", {"metric": self.metric, "mode": self.mode, "value": self.value,
                                                      "step": step})

            _write_folder(self.path, write, "write the best weights", f"the last complete checkpoint is "
                          f"{latest_checkpoint(self.run.dir)}: free space and rerun with --resume")
            log.info("best %s %.4f at step %d: %s", self.metric, self.value, step, self.path)
        accelerator.wait_for_everyone()


def _write_folder(dest: Path, write, doing: str, hint: str) -> None:
    """Write a folder through `write(tmp)` into `.<name>.tmp` beside `dest`, then swap it in (rank 0 only).

    Nothing half-written ever carries `dest`'s name; a write error (a full disk) removes the temp folder
    and becomes one line naming the path, the cause and `hint`.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        check_tree(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (io := _write_error(e)) is None:
            raise
        raise io_failed(io, tmp, doing, hint) from None


def save_checkpoint(run: Run, accelerator, model, task, ema, step: int, epoch: int, position: int, keep: int,
                    state: dict | None = None) -> Path:
    """Write checkpoints/step-N atomically: everything goes to a temp dir renamed when complete.

    `state` adds keys to trainer_state.json (the best-metric tracker, whether this step was evaluated).
    """
    final = run.checkpoints / f"step-{step}"
    tmp = run.checkpoints / f".step-{step}.tmp"
    try:
        _write_checkpoint(run, accelerator, model, task, ema, step, epoch, position, keep, state, tmp, final)
    except Exception as e:  # disk full, quota, permissions: this rank stops (the launcher ends the others)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if (io := _write_error(e)) is None:
            raise
        last = latest_checkpoint(run.dir)
        raise io_failed(io, tmp, "write checkpoint",
                        f"the last complete checkpoint ({last or 'none yet'}) is intact: free space and rerun the "
                        f"same command with --resume") from None
    return final


def _write_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write, or None: torch.save and safetensors wrap ENOSPC in their own errors."""
    import errno

    if isinstance(error, OSError):
        return error
    text = str(error)
    markers = ("No space left", "Disk quota", "file write failed", "unexpected pos", "IoError")
    if not any(m in text for m in markers):
        return None
    code = errno.ENOSPC if "No space" in text else errno.EDQUOT if "quota" in text else errno.EIO
    return OSError(code, text.splitlines()[0][:200] if text else "write failed")


def _write_checkpoint(run, accelerator, model, task, ema, step, epoch, position, keep, state, tmp, final) -> None:
    from safetensors.torch import save_file

    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process: RNG states per rank, DeepSpeed shards
    state_dict = accelerator.get_state_dict(model)
    # Every rank has finished writing into tmp before rank 0 renames it (else a late rank recreates
    # the temp folder or dies writing into a path that moved).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        task.save_pretrained(accelerator.unwrap_model(model), tmp / "model", state_dict=state_dict)
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        write_json_atomic(tmp / "trainer_state.json", {
            "step": step, "epoch": epoch, "batches_in_epoch": position,
            "num_processes": accelerator.num_processes, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(state or {}),
        })
        check_tree(tmp)  # every rank's files, as the rename publishes them all
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        for _, old in list_checkpoints(run.dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint: %s", final)
    accelerator.wait_for_everyone()


def _load_checkpoint(ckpt: Path, accelerator, ema) -> tuple[dict, int]:
    """Restore accelerate's state and the EMA shadow; (trainer_state.json, batches into the epoch)."""
    from safetensors.torch import load_file

    accelerator.load_state(str(ckpt))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if ema is not None and (ckpt / "ema.safetensors").is_file():
        ema.shadow = {k: v.float() for k, v in load_file(str(ckpt / "ema.safetensors")).items()}
    position = int(state["batches_in_epoch"])
    saved_procs = int(state.get("num_processes", accelerator.num_processes))
    if saved_procs != accelerator.num_processes:
        # Same number of samples seen, expressed in batches of the new process count.
        position = position * saved_procs // accelerator.num_processes
        log.warning("resuming a %d-process run on %d processes", saved_procs, accelerator.num_processes)
    return state, position


def _truncate_metrics(path: Path, step: int, keep_eval_at_step: bool) -> None:
    """On resume from checkpoint `step`: drop the lines the resumed run writes again (atomic rewrite).

    Kept: every line of an earlier step, the training line of `step` itself, and its evaluation when
    that ran before the checkpoint was written (`keep_eval_at_step`).
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            at = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the crash
        if at < step or (at == step and ("eval" not in record or keep_eval_at_step)):
            kept.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)
