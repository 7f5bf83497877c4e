"""Saving and loading the Emo-A head (`emocli.metrics.emotion.EmotionHead`, one ``Linear(D -> 8)`` named ``fc``).

Our format, written by `emo train emotion-classifier` to ``RUN/final/model/``:

    emotion_head.safetensors   fc.weight (8, D), fc.bias (8) - the released classifier's key layout
    emotion_head.json          {"format", "dim", "num_classes", "labels", "clip", "features"}

`load_emotion_head` reads that folder, a run directory holding it, a bare ``.safetensors`` file, or EmoGen's
released ``time_2023-11-12_03-29-best.pth`` (saved on a CUDA machine; read on the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

from emocli.emotions import EMOSET
from emocli.errors import EmoError

HEAD_FILE = "emotion_head.safetensors"
CONFIG_FILE = "emotion_head.json"
FORMAT = "emocli.EmotionHead/1"
FEATURES = "raw (unnormalised) CLIPModel.get_image_features after the CLIPProcessor's preprocessing"


def save_emotion_head(directory, state_dict: dict, clip: str | None) -> Path:
    """Write ``emotion_head.safetensors`` + ``emotion_head.json`` into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weight, bias = state_dict["fc.weight"], state_dict["fc.bias"]
    save_file({"fc.weight": weight.detach().float().cpu().contiguous(),
               "fc.bias": bias.detach().float().cpu().contiguous()}, str(directory / HEAD_FILE))
    config = {"format": FORMAT, "dim": int(weight.shape[1]), "num_classes": int(weight.shape[0]),
              "labels": list(EMOSET.labels), "clip": clip, "features": FEATURES}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


def _head_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / HEAD_FILE, path / "final" / "model" / HEAD_FILE, path / "model" / HEAD_FILE):
        if candidate.is_file():
            return candidate
    raise EmoError(f"{str(path)!r} holds no {HEAD_FILE}: give an `emo train emotion-classifier` run directory, "
                   f"its final/model folder, a head .safetensors or EmoGen's time_2023-11-12_03-29-best.pth")


def load_emotion_head(path, recipe_key: str):
    """(EmotionHead in eval mode, info) from any of the forms in the module docstring.

    `info`: {"source": file read, "dim", "num_classes", "clip": the CLIP it was trained on (ours) or None}.
    A missing path raises EmoError naming `recipe_key`.
    """
    from emocli.metrics.common import load_state_dict_file
    from emocli.metrics.emotion import OFFICIAL_FILE, EmotionHead

    if path is None or str(path) == "":
        raise EmoError(f"no emotion classifier head given: set the recipe key {recipe_key}")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise EmoError(f"emotion classifier head {str(p)!r} does not exist (recipe key {recipe_key}); expected "
                       f"EmoGen's {OFFICIAL_FILE}, a head .safetensors or an `emo train emotion-classifier` run")
    file = _head_file(p)
    state = load_state_dict_file(file, recipe_key, f"emotion classifier head ({OFFICIAL_FILE} or {HEAD_FILE})")
    if "fc.weight" not in state or "fc.bias" not in state:
        raise EmoError(f"{str(file)!r} has no fc.weight/fc.bias (found: {sorted(state)[:6]}); not an Emo-A head "
                       f"(recipe key {recipe_key})")
    weight, bias = state["fc.weight"], state["fc.bias"]
    if weight.ndim != 2 or tuple(bias.shape) != (weight.shape[0],):
        raise EmoError(f"{str(file)!r}: fc.weight {tuple(weight.shape)} / fc.bias {tuple(bias.shape)} do not form "
                       f"a linear layer (recipe key {recipe_key})")
    if weight.shape[0] != len(EMOSET):
        raise EmoError(f"{str(file)!r} has {weight.shape[0]} classes; Emo-A needs the 8 EmoSet emotions "
                       f"(recipe key {recipe_key})")
    head = EmotionHead(dim=int(weight.shape[1]), num_classes=int(weight.shape[0]))
    head.load_state_dict({"fc.weight": weight.float(), "fc.bias": bias.float()})
    clip = None
    config_file = file.parent / CONFIG_FILE
    if config_file.is_file():
        try:
            clip = json.loads(config_file.read_text()).get("clip")
        except ValueError:
            clip = None
    info = {"source": str(file.resolve()), "dim": int(weight.shape[1]), "num_classes": int(weight.shape[0]),
            "clip": clip}
    return head.eval(), info
