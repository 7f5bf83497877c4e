"""Checks a method runs on its recipe before the run directory exists (`preflight=` in emocli/registry.py).

A method's `preflight(recipe)` composes the checks below with `check_all`, which runs every check and
raises one `EmoError` listing all the problems (each names its recipe key and what is allowed), so a
user fixes a recipe in one go and a failing check leaves nothing on disk:

    from emocli import preflight as pf

    def preflight(recipe):
        pf.check_all(
            *pf.train_checks(recipe),                                   # precision, trackers
            lambda: pf.model_source(recipe.model.pretrained, "model.pretrained"),
            lambda: pf.prepared_splits(recipe.data.prepared, ["train"], "data.prepared"),
        )

Every check is a plain function that returns quietly (or what it read) when the input is fine and raises
`EmoError` otherwise. They touch no network and read no weights, so a preflight stays fast:

    check_all(*checks)                        run each zero-argument callable; one error naming every problem
    model_source(value, key, what)            an existing local folder/file, or something shaped like a Hub
                                              id ("org/name"); a path-like value that does not exist fails
    local_path(value, key, what, kind)        an existing file ("file"), folder ("folder") or either ("any")
    precision(mixed_precision, key)           "fp16" needs CUDA; "bf16" needs a GPU that supports it, or a
                                              CPU on which a bf16 autocast forward/backward runs (probed once)
    device(value, key)                        "cuda" needs CUDA ("auto" and "cpu" always pass)
    trackers(names, key)                      each tracker's package is installed (tensorboard, wandb, ...)
    prepared_splits(path, splits, key)        a prepared EmoSet folder (`emo data prepare emoset`) whose listed
                                              splits hold images (counts from prepare.json); returns its
                                              PreparedEmoSet
    emoset_source(path, splits, key)          a prepared folder or an EmoSet release folder with those splits
    train_checks(recipe)                      the checks every `fit`-based recipe shares (precision, trackers)
    how_to_make(path)                         "; make it with `emo ...`" for a missing path that an `emo`
                                              command writes (tiny models, tiny metric weights, the
                                              synthetic VAD lexicon), else ""

Imports only the standard library at module level; torch is imported by `precision`/`device` when needed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from emocli.errors import EmoError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
_TINY_KINDS = ("sd", "clip", "resnet", "gpt2", "vlm", "unidiffuser")  # `emo models make-tiny --only`


def how_to_make(value) -> str:
    """The command that writes a missing path, as a "; make it with `...`" suffix ("" when none does).

    A newcomer following a tiny recipe meets these first: its defaults point at `models/tiny/<kind>`,
    `models/tiny/metrics/*.safetensors` and the synthetic ArtEmis VAD lexicon.
    """
    path = Path(str(value))
    parts = path.parts
    if path.name == "synthetic-vad-lexicon.txt":
        return f"; make it with `emo data synth artemis --out {path.parent} --n 40`"
    if not any("tiny" in part for part in parts):  # a real model is downloaded, not made
        return ""
    if path.suffix == ".safetensors" and path.parent.name == "metrics":
        return f"; make it with `emo eval tiny-weights --out {path.parent}`"
    for i, part in enumerate(parts[1:], start=1):
        if part in _TINY_KINDS:
            return f"; make it with `emo models make-tiny --out {Path(*parts[:i])} --only {part}`"
    return ""


def check_all(*checks: Callable[[], object]) -> None:
    """Run every check; raise one EmoError whose message lists each problem (in order), if any."""
    problems = []
    for check in checks:
        try:
            check()
        except EmoError as e:
            problems.append(e.message)
    if problems:
        raise EmoError("; ".join(problems))


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(value)


def model_source(value: str | None, key: str, what: str = "weights") -> None:
    """A local folder/file that exists, or a Hub id (resolved later, by the loader: nothing is fetched here)."""
    if value is None:
        return
    path = Path(str(value)).expanduser()
    if path.exists():
        return
    if _looks_like_path(str(value)):
        raise EmoError(f"{key}: {what} {str(value)!r} does not exist (a local path; a Hub id looks like "
                       f"org/name){how_to_make(value)}")


def local_path(value: str | None, key: str, what: str = "file", kind: str = "any") -> Path | None:
    """An existing local path of the given kind ("file", "folder" or "any"); None passes."""
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise EmoError(f"{key}: {what} {str(value)!r} does not exist{how_to_make(value)}")
    if kind == "file" and not path.is_file():
        raise EmoError(f"{key}: {what} {str(value)!r} is not a file")
    if kind == "folder" and not path.is_dir():
        raise EmoError(f"{key}: {what} {str(value)!r} is not a folder")
    return path


def precision(mixed_precision: str, key: str = "launch.mixed_precision") -> None:
    """Whether this machine can train in `mixed_precision` ("no", "fp16", "bf16")."""
    if mixed_precision in (None, "no"):
        return
    import torch

    if mixed_precision == "fp16":
        if not torch.cuda.is_available():
            raise EmoError(f"{key}=fp16 needs a CUDA GPU and none is visible; use {key}=no on a CPU")
    elif mixed_precision == "bf16":
        if torch.cuda.is_available():
            if not torch.cuda.is_bf16_supported():
                raise EmoError(f"{key}=bf16: this GPU ({torch.cuda.get_device_name()}) does not support bf16; "
                               f"use {key}=fp16")
        elif not _cpu_bf16_works():
            raise EmoError(f"{key}=bf16: bf16 autocast does not run on this CPU; use {key}=no")
    else:
        raise EmoError(f"{key}={mixed_precision!r}: allowed: no, fp16, bf16")


@functools.lru_cache(maxsize=1)
def _cpu_bf16_works() -> bool:
    import torch

    try:
        layer = torch.nn.Linear(8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(torch.randn(2, 8))
        out.float().sum().backward()
        return out.dtype == torch.bfloat16 and layer.weight.grad is not None
    except (RuntimeError, TypeError):
        return False


def device(value: str, key: str) -> None:
    """"cuda" needs a visible CUDA GPU."""
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise EmoError(f"{key}=cuda but no CUDA GPU is visible; use {key}=auto or cpu")


def trackers(names: Iterable[str], key: str = "train.trackers") -> None:
    """Every named tracker's package is installed."""
    for name in names:
        package = _TRACKER_PACKAGES.get(name, name)
        if importlib.util.find_spec(package) is None:
            raise EmoError(f"{key}: {name} is not installed (pip install {package}), or leave it out: {key}=[]")


def _manifest(path: Path) -> dict | None:
    try:
        data = json.loads((path / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def prepared_splits(path: str, splits: Iterable[str], key: str = "data.prepared"):
    """A prepared EmoSet folder whose `splits` each hold at least one image; returns its PreparedEmoSet."""
    from emocli.data.prepare import PreparedEmoSet

    try:
        prepared = PreparedEmoSet(path)
    except EmoError as e:
        raise EmoError(f"{key}: {e.message}") from None
    counts = (prepared.manifest.get("counts") or {}).get("per_split") or {}
    if not (prepared.path / "records.jsonl").is_file():
        raise EmoError(f"{key}: {prepared.path} lacks records.jsonl; prepare it again")
    for split in splits:
        if not counts.get(split):
            present = ", ".join(f"{s} ({n})" for s, n in counts.items()) or "none"
            raise EmoError(f"{key}: {prepared.path} has no {split!r} images (splits present: {present})")
    return prepared


def emoset_source(path: str, splits: Iterable[str], key: str = "data.prepared") -> None:
    """A prepared EmoSet folder or an EmoSet release folder (info.json, train.json) with the listed splits."""
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise EmoError(f"{key}: EmoSet folder {str(path)!r} does not exist")
    if (root / "prepare.json").is_file():
        prepared_splits(str(root), splits, key)
        return
    if (root / "records.jsonl").is_file():
        return
    if (root / "info.json").is_file() and (root / "train.json").is_file():
        for split in splits:
            split_file = root / f"{split}.json"
            try:
                entries = json.loads(split_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise EmoError(f"{key}: {root} has no readable {split}.json") from None
            if not entries:
                raise EmoError(f"{key}: {split_file} lists no images")
        return
    raise EmoError(f"{key}: {root} is neither a prepared EmoSet folder (prepare.json; `emo data prepare emoset`) "
                   f"nor an EmoSet release (info.json, train.json)")


def train_checks(recipe) -> list[Callable[[], object]]:
    """The checks of every recipe trained by the shared loop: precision on this device and trackers."""
    return [lambda: precision(recipe.launch.mixed_precision),
            lambda: trackers(recipe.train.trackers)]
