"""Weights-only loading of `.pt` / `.pth` / `.bin` / `.tar` files: the one place `torch.load` is called.

Downloaded checkpoints are never unpickled. `torch.load(weights_only=True)` admits tensors, containers and
a few plain types; a file that needs anything else is refused in one line that names the file and the
globals it asks for (never torch's advice to retry with `weights_only=False`). `allowed` admits extra,
known-harmless globals for one call (e.g. numpy's array reconstruction for released EmoGen files).
"""

from __future__ import annotations

from pathlib import Path

from emocli.errors import EmoError


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals a pickled checkpoint needs beyond what weights-only loading admits ([] if none, or unknown)."""
    import torch

    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return []
    try:
        return sorted(str(g) for g in finder(str(path)))
    except Exception:  # not a zip checkpoint (legacy format): torch cannot list them
        return []


def load_weights_only(path: str | Path, what: str = "weights file", allowed: list | None = None):
    """`torch.load(path, map_location="cpu", weights_only=True)`, with one-line refusals.

    Raises EmoError (exit 2) when the file is missing, is not a torch file, or needs globals that
    weights-only loading refuses; in that case the message lists them and says nothing was unpickled.
    """
    import pickle

    import torch

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise EmoError(f"{what} {str(path)!r} does not exist")
    try:
        if allowed:
            with torch.serialization.safe_globals(list(allowed)):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = unsafe_globals(path) or _globals_named_in(str(e))
        if not blocked and "Unsupported global" not in str(e):  # not a pickle at all (a text file, a truncation)
            raise EmoError(f"cannot read {what} {str(path)!r}: not a readable torch checkpoint "
                           f"({_unpickler_reason(str(e))})") from None
        listed = ", ".join(blocked) if blocked else "objects other than tensors"
        raise EmoError(f"refused to load {what} {str(path)!r}: it needs {listed}, which weights-only loading does "
                       f"not admit; nothing was unpickled (convert it to safetensors or a plain state dict "
                       f"from a trusted copy)") from None
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise EmoError(f"cannot read {what} {str(path)!r}: not a readable torch checkpoint "
                       f"({type(e).__name__}{': ' + first if first else ''})") from None


def _globals_named_in(message: str) -> list[str]:
    """Blocked global names quoted in torch's UnpicklingError text ("Unsupported global: GLOBAL a.b.C")."""
    import re

    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))


def _unpickler_reason(message: str) -> str:
    """The short cause inside torch's UnpicklingError text ("Unsupported operand 110"), without its advice."""
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    after = message.split("WeightsUnpickler error:", 1)
    if len(after) == 2 and after[1].strip():
        return after[1].strip().splitlines()[0]
    return lines[0] if lines and "weights_only" not in lines[0] else "UnpicklingError"
