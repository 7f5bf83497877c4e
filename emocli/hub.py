"""Loading pretrained components from a Hub id or a local folder, with a clear error when missing."""

from __future__ import annotations

from pathlib import Path

from emocli.errors import EmoError


def load_pretrained(loader, name_or_path: str, recipe_key: str, what: str = "weights", **kwargs):
    """`loader(name_or_path, **kwargs)`; a missing local folder or unreachable Hub id becomes one line
    naming the id and the recipe key that points at a local copy."""
    path = Path(str(name_or_path)).expanduser()
    looks_local = str(name_or_path).startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.exists():
        raise EmoError(f"{what} folder {str(path)!r} does not exist (recipe key {recipe_key})")
    try:
        return loader(str(path) if looks_local else name_or_path, **kwargs)
    except (OSError, ValueError) as e:
        if looks_local:
            raise EmoError(f"cannot load {what} from {str(path)!r} (recipe key {recipe_key}): "
                           f"{str(e).splitlines()[0]}") from None
        raise EmoError(
            f"cannot load {what} {name_or_path!r} (recipe key {recipe_key}): not in the local Hugging Face "
            f"cache and the Hub is unreachable. Download it where there is network "
            f"(`hf download {name_or_path}`) or set {recipe_key}=/path/to/a/local/copy"
        ) from None


def quiet_loading() -> None:
    """No per-file progress bars from diffusers/transformers when loading weights (our own progress shows)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
