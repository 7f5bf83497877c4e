"""Loading pretrained components from a Hub id or a local folder, with a clear error when missing.

A name is a local path when it starts with `.`, `/` or `~`, exists, has more than one `/`, or its first
component is an existing folder (`models/tiny/vlmm` is a typo of a local folder, not a Hub id); a missing
local path is reported as such. An existing folder with none of the files `save_pretrained` writes is
"not a model folder". Anything else is a Hub id: when the Hub cannot be reached (HF_HUB_OFFLINE set, or no
connection to the endpoint within a few seconds, probed once per process) it is loaded with
`local_files_only=True`, so an id missing from the local cache fails at once instead of after retries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from emocli.errors import EmoError

# Files that make a folder loadable with from_pretrained (transformers, diffusers, PEFT, processors).
MODEL_FILES = ("config.json", "model_index.json", "adapter_config.json", "preprocessor_config.json",
               "processor_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "scheduler_config.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
PROBE_TIMEOUT_S = 3.0
_offline: bool | None = None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set, or when the Hub endpoint (HF_ENDPOINT) cannot be reached within
    PROBE_TIMEOUT_S (name resolution included). Decided once per process. Behind a proxy the probe is
    skipped (the direct connection proves nothing) and the Hub is taken as reachable."""
    global _offline
    if _offline is None:
        flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
        if flag in ("1", "true", "yes", "on"):
            _offline = True
        elif any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
            _offline = False
        else:
            _offline = not _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), PROBE_TIMEOUT_S)
    return _offline


def _reachable(endpoint: str, timeout: float) -> bool:
    """A TCP connection to the endpoint's host, in a thread so a hanging name lookup is bounded too."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    if not host:
        return False
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def is_local_path(name: str) -> bool:
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or path.exists() or not _HUB_ID.match(name):
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).is_dir()


def load_pretrained(loader, name_or_path: str, recipe_key: str, what: str = "weights", **kwargs):
    """`loader(name_or_path, **kwargs)`; a missing local folder, a folder that is not a model, or a Hub id
    that cannot be fetched becomes one line naming the path or id and the recipe key."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if is_local_path(name):
        if not path.exists():
            from emocli.preflight import how_to_make

            raise EmoError(f"{what} folder {str(path)!r} does not exist (recipe key {recipe_key})"
                           f"{how_to_make(path)}")
        if path.is_dir() and not _looks_like_model(path):
            raise EmoError(f"{what} folder {str(path)!r} is not a model folder: none of {', '.join(MODEL_FILES[:4])}, "
                           f"... or *.safetensors in it (recipe key {recipe_key}; expected what save_pretrained "
                           f"writes)")
        try:
            return loader(str(path), **kwargs)
        except (OSError, ValueError) as e:
            raise EmoError(f"cannot load {what} from {str(path)!r} (recipe key {recipe_key}): "
                           f"{str(e).splitlines()[0]}") from None
    offline = hub_offline()
    try:
        return loader(name, **({**kwargs, "local_files_only": True} if offline else kwargs))
    except (OSError, ValueError) as e:
        why = ("the Hub is unreachable (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE")
               else "the Hub is unreachable" if offline else f"the Hub did not provide it ({str(e).splitlines()[0]})")
        raise EmoError(
            f"cannot load {what} {name!r} (recipe key {recipe_key}): not in the local Hugging Face cache and "
            f"{why}. Download it where there is network (`hf download {name}`) or set "
            f"{recipe_key}=/path/to/a/local/copy"
        ) from None


def _looks_like_model(folder: Path) -> bool:
    if any((folder / f).is_file() for f in MODEL_FILES) or any(folder.glob("*.safetensors")):
        return True
    # diffusers pipelines and some processors keep their files one level down (unet/, tokenizer/, ...)
    return any((sub / f).is_file() for sub in folder.iterdir() if sub.is_dir() for f in MODEL_FILES)


def quiet_loading() -> None:
    """No per-file progress bars from diffusers/transformers when loading weights (our own progress shows)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
