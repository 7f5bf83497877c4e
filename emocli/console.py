"""A quiet console: third-party warnings and log records go to a log file, not to the terminal.

Loading a model prints reports that are expected here (unexpected CLIP text keys when only the vision
tower is loaded, new cross-attention keys, mean-resized embeddings, "Removed shared tensor" on save,
torchvision fallbacks, FutureWarnings; docs/architecture.md lists them). To a newcomer they read like
errors. `start()` (called once by the `emo` command and by each launched worker) routes them:

- every logger that is not `emocli` (transformers, diffusers, accelerate, datasets, DeepSpeed, torch, ...)
  and the `warnings` module (`logging.captureWarnings`) go to a sink instead of the console;
- the sink keeps them in memory until it knows its file: the run's `log.txt` (`attach()`, called by
  `emocli.progress.setup_logging`) or `emo --log-file PATH` for commands without a run;
- at exit the console shows one line: "N library messages in PATH (emo --verbose shows them)".

`emo --verbose` shows them as the libraries print them (and still writes the file). emo's own messages
(the `emocli` logger, typer output) are never routed. Only the standard library is imported, so
`import emocli.cli` stays light; the routing works for libraries imported later because it is a
logger class (`logging.setLoggerClass`): each library logger made after `start()` hands its records to
the sink before any handler the library attached to it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

OWN = "emocli"
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")


class _Sink:
    def __init__(self):
        self.verbose = False
        self.main = True  # rank 0 of a launch (or a plain command): the one that writes and reports
        self.path: Path | None = None
        self.pending: list[logging.LogRecord] = []
        self.count = 0
        self.handler: logging.Handler | None = None
        self.fixed = False  # `emo --log-file`: the user's file wins over a run's log.txt

    def take(self, record: logging.LogRecord) -> None:
        if not self.main:
            return
        self.count += 1
        if self.handler is None:
            self.pending.append(record)
        else:
            self.handler.handle(record)

    def attach(self, path) -> None:
        """Later messages go to `path` (one process may make several runs: `emo quickstart`)."""
        if not self.main or (self.path is not None and self.path.resolve() == Path(path).resolve()):
            return
        if self.handler is not None:
            self.handler.close()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(_FORMAT)
        for record in self.pending:
            self.handler.handle(record)
        self.pending.clear()

    def report(self) -> None:
        if not self.main or not self.count:
            return
        n = f"{self.count} library message{'s' if self.count != 1 else ''}"
        if self.path and self.verbose:
            line = f"{n} shown above, also in {self.path}"
        elif self.path:
            line = f"{n} in {self.path} (emo --verbose shows them)"
        elif not self.verbose:
            line = f"{n} hidden (emo --verbose shows them, emo --log-file PATH keeps them)"
        else:
            return
        print(line, file=sys.stderr)


SINK = _Sink()


def _is_library(name: str) -> bool:
    return name != OWN and not name.startswith(OWN + ".")


class _RoutedLogger(logging.Logger):
    """A library logger: its records go to the sink; the library's own handlers run only with --verbose."""

    def callHandlers(self, record):
        if _is_library(record.name):
            SINK.take(record)
            if not SINK.verbose:
                return
        super().callHandlers(record)


class _WarningsHandler(logging.Handler):
    def emit(self, record):
        SINK.take(record)
        if SINK.verbose:
            print(record.getMessage(), file=sys.stderr)


_started = False


def start(verbose: bool = False, log_file: str | os.PathLike | None = None) -> None:
    """Route library messages to the sink (idempotent). `verbose` also shows them; children inherit it."""
    global _started
    verbose = verbose or os.environ.get("EMO_VERBOSE") == "1"
    if verbose:
        os.environ["EMO_VERBOSE"] = "1"  # launched workers show them too
    SINK.verbose = verbose
    SINK.main = os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"
    if _started:
        return
    _started = True
    if log_file is not None:
        SINK.attach(log_file)
        SINK.fixed = True
    logging.setLoggerClass(_RoutedLogger)
    for name, existing in list(logging.Logger.manager.loggerDict.items()):  # made before start()
        if isinstance(existing, logging.Logger) and _is_library(name) and name != "py.warnings":
            existing.__class__ = _RoutedLogger
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.__class__ = logging.Logger  # its records reach the sink through _WarningsHandler
    warnings_logger.handlers = [_WarningsHandler()]
    warnings_logger.propagate = False
    atexit.register(SINK.report)


def attach(path) -> None:
    """Write the routed messages (those so far and all later ones) to `path`: a run's log.txt.
    Nothing happens unless `start()` ran (library code called from tests or notebooks is left alone)."""
    if _started and not SINK.fixed:
        SINK.attach(path)
