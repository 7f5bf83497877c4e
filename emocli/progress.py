"""Progress display: a rich bar on a terminal, plain log lines otherwise (CI, files, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

log = logging.getLogger("emocli")


def interactive() -> bool:
    return sys.stderr.isatty()


class StepProgress:
    """Progress over a known number of steps, with a short text of current values."""

    def __init__(self, total: int, description: str, enabled: bool = True, every: int = 10, start: int = 0):
        self.total, self.description, self.enabled, self.every = total, description, enabled, every
        self.done = start
        self._start_done = start
        self._t0 = time.perf_counter()
        self._bar = None
        if enabled and interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )
            self._task = self._bar.add_task(description, total=total, completed=start, info="")
            self._bar.start()

    def rate(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, info: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=info)
        elif self.done % self.every == 0 or self.done == self.total:
            log.info("%s %d/%d %s (%.2f it/s)", self.description, self.done, self.total, info, self.rate())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def step_progress(total: int, description: str, enabled: bool = True, every: int = 10, start: int = 0):
    bar = StepProgress(total, description, enabled, every, start)
    try:
        yield bar
    finally:
        bar.close()


def track(iterable, total: int | None = None, description: str = "", enabled: bool = True, every: int = 10):
    """Iterate with progress; `total` defaults to len(iterable)."""
    total = len(iterable) if total is None else total
    with step_progress(total, description, enabled, every) as bar:
        for item in iterable:
            yield item
            bar.update()


def setup_logging(run_dir=None, main_process: bool = True, debug: bool = False) -> None:
    """Log to stderr (main process) and to RUN_DIR/log.txt."""
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        if getattr(handler, "_emo", False):
            log.removeHandler(handler)
            handler.close()
    if not main_process:
        return
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream._emo = True
    log.addHandler(stream)
    if run_dir is not None:
        from emocli import console

        console.attach(str(run_dir) + "/log.txt")  # library messages (emocli/console.py) go there too
        file = logging.FileHandler(str(run_dir) + "/log.txt")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        file._emo = True
        log.addHandler(file)
