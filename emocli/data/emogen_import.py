"""`emo data import-emogen`: convert the released EmoGen artifacts into safe, documented files.

Reads a checkout of the official EmoGen repository (never downloads it):

    emo_space/<emotion>_{mean,std}_v2.pt                      -> emotion_space.safetensors
    dataset_balance/attr_coefficient_emotion_{object,scene}.pkl -> alpha.json (method "official-emogen")
    dataset_balance/{object,scene}_attr.pkl                   -> attribute_vocab.json
    dataset_balance/all_attribute_object_scene.pkl            -> attribute_tags.json
    weights/Clip_emotion_classifier/*.pth                     -> emotion_head.safetensors (weight [8,768], bias [8])

plus import.json (what was written, what was missing). Pickles are read with `SafeUnpickler`, which
admits only what a pickled numpy array needs; the .pth with emocli.safeload.load_weights_only. Pieces
that are absent are reported by name and skipped; a folder with none of them is an error. Output is
written to a temporary folder next to OUT and renamed at the end.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from pathlib import Path

import numpy as np

from emocli.data.prepare import check_output_folder, staged_folder, write_json
from emocli.emotions import EMOSET
from emocli.errors import EmoError

log = logging.getLogger("emocli")

FORMAT = "emo-emogen-import/1"
MANIFEST = "import.json"
HEAD_FORMAT = "emo-emotion-head/1"
PIECES = ("emotion_space", "alpha", "attribute_vocab", "attribute_tags", "emotion_head")
VOCAB_RULE = ("the official EmoGen curated lists (dataset_balance/object_attr.pkl and scene_attr.pkl, keys "
              "attr_<emotion>); the selection rule was not published")


def _numpy_callables() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2 (numpy.core is then a deprecated alias of numpy._core)
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    def dtype(*args):
        d = np.dtype(*args)
        if d.hasobject:
            raise EmoError("pickle holds an object-dtype numpy array; refused")
        return d

    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers (dict, list, tuple, str, numbers) and numpy arrays / scalars only.

    Any other global a pickle names (a function or class: os.system, builtins.eval, ...) raises
    EmoError before it is touched. `source` names the file in the message.
    """

    def __init__(self, file, source: str = "pickle"):
        super().__init__(file)
        self.source = source
        self._allowed = _numpy_callables()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise EmoError(f"{self.source}: refusing to unpickle {module}.{name} (only numpy arrays and plain "
                           f"containers are allowed in EmoGen's data files)")
        return found

    def persistent_load(self, pid):
        raise EmoError(f"{self.source}: refusing a pickle with persistent ids")


def safe_load_pickle(path) -> object:
    """Load a pickle with `SafeUnpickler`; any failure is an EmoError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EmoError(f"cannot read {path}: {e}") from None
    try:
        return SafeUnpickler(io.BytesIO(data), source=str(path)).load()
    except EmoError:
        raise
    except Exception as e:
        raise EmoError(f"{path} is not a readable pickle ({type(e).__name__}: {e})") from None


def _find(repo: Path, relative: str) -> Path | None:
    for base in (repo, repo / "training"):
        candidate = base / relative
        if candidate.exists():
            return candidate
    return None


def _alpha_table(path: Path) -> dict[str, list[float]]:
    data = safe_load_pickle(path)
    if not isinstance(data, dict):
        raise EmoError(f"{path}: expected a dict attribute -> float32[8], got {type(data).__name__}")
    table = {}
    for key, value in data.items():
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if not isinstance(key, str) or arr.shape != (len(EMOSET),):
            raise EmoError(f"{path}: entry {key!r} is not attribute -> {len(EMOSET)} probabilities")
        table[key] = [float(x) for x in arr]
    return dict(sorted(table.items()))


def _attr_lists(path: Path) -> dict[str, list[str]]:
    data = safe_load_pickle(path)
    if not isinstance(data, dict):
        raise EmoError(f"{path}: expected a dict attr_<emotion> -> list of names, got {type(data).__name__}")
    out = {e: [] for e in EMOSET.labels}
    for key, names in data.items():
        emotion = str(key).removeprefix("attr_")
        if emotion not in out or not isinstance(names, (list, tuple)):
            raise EmoError(f"{path}: unexpected key {key!r} (expected attr_<emotion> -> list, emotions "
                           f"{', '.join(EMOSET.labels)})")
        out[emotion] = [str(n) for n in names]
    return out


def _emotion_head(path: Path) -> dict:
    import torch

    from emocli.safeload import load_weights_only

    state = load_weights_only(path, what="EmoGen emotion classifier")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EmoError(f"{path}: expected a state dict, got {type(state).__name__}")
    head = {}
    for key, value in state.items():
        short = str(key)
        for prefix in ("module.", "fc."):
            short = short.removeprefix(prefix)
        if short in ("weight", "bias") and isinstance(value, torch.Tensor):
            head[short] = value.detach().float().cpu().contiguous()
    weight, bias = head.get("weight"), head.get("bias")
    if weight is None or bias is None or weight.ndim != 2 or weight.shape[0] != len(EMOSET) \
            or tuple(bias.shape) != (len(EMOSET),):
        shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
        raise EmoError(f"{path}: expected a Linear(D -> {len(EMOSET)}) state dict (fc.weight, fc.bias), "
                       f"got {shapes}")
    return {"weight": weight, "bias": bias}


def import_emogen(repo, out, overwrite: bool = False) -> Path:
    """Convert the artifacts of an official EmoGen checkout at `repo` into the folder `out`; returns `out`."""
    from emocli import __version__

    repo = Path(repo).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not repo.is_dir():
        raise EmoError(f"EmoGen repository {repo} does not exist or is not a folder (pass a checkout of "
                       f"JingyuanYY/EmoGen)")
    check_output_folder(out, overwrite, repo, MANIFEST, kind="EmoGen import folder", source_name="repository")

    wanted = {
        "emotion_space": ["emo_space"],
        "alpha": ["dataset_balance/attr_coefficient_emotion_object.pkl",
                  "dataset_balance/attr_coefficient_emotion_scene.pkl"],
        "attribute_vocab": ["dataset_balance/object_attr.pkl", "dataset_balance/scene_attr.pkl"],
        "attribute_tags": ["dataset_balance/all_attribute_object_scene.pkl"],
        "emotion_head": ["weights/Clip_emotion_classifier"],
    }
    found: dict[str, list[Path]] = {}
    missing: list[str] = []
    for piece, relatives in wanted.items():
        paths = [_find(repo, rel) for rel in relatives]
        if piece == "emotion_space" and paths[0] is not None and not any(paths[0].glob("*_mean_v2.pt")):
            paths = [None]
        if piece == "emotion_head" and paths[0] is not None:
            pths = sorted(paths[0].glob("*.pth"))
            paths = [pths[-1]] if pths else [None]
            if len(pths) > 1:
                log.warning("%s holds %d .pth files; using %s", pths[0].parent, len(pths), pths[-1].name)
        absent = [rel for rel, p in zip(relatives, paths) if p is None]
        if absent:
            missing.extend(absent if piece != "emotion_head" else ["weights/Clip_emotion_classifier/*.pth"])
            if len(absent) == len(relatives):
                continue
        found[piece] = [p for p in paths if p is not None]
    if not found:
        raise EmoError(f"{repo} holds none of EmoGen's released artifacts (looked for emo_space/, "
                       f"dataset_balance/*.pkl, weights/Clip_emotion_classifier/*.pth); is it a checkout of "
                       f"JingyuanYY/EmoGen?")

    written: dict[str, str] = {}
    with staged_folder(out, "the imported files") as stage:
        if "emotion_space" in found:
            from emocli.emotion_space import EmotionSpace

            space = EmotionSpace.load(found["emotion_space"][0])
            space.save(stage / "emotion_space.safetensors")
            written["emotion_space.safetensors"] = f"emotion space [{len(space.emotions)}, {space.dim}]"
        if "alpha" in found:
            alpha = {"method": "official-emogen", "classifier": None, "emotions": list(EMOSET.labels),
                     "scene": {}, "object": {}}
            for path in found["alpha"]:
                prop = "object" if path.name.endswith("_object.pkl") else "scene"
                alpha[prop] = _alpha_table(path)
            write_json(stage / "alpha.json", alpha)
            written["alpha.json"] = f"{len(alpha['object'])} object + {len(alpha['scene'])} scene attributes"
        if "attribute_vocab" in found:
            per_emotion = {"scene": {e: [] for e in EMOSET.labels}, "object": {e: [] for e in EMOSET.labels}}
            for path in found["attribute_vocab"]:
                prop = "object" if path.name.startswith("object") else "scene"
                per_emotion[prop] = _attr_lists(path)
            vocabulary = sorted({a for lists in per_emotion.values() for names in lists.values() for a in names})
            write_json(stage / "attribute_vocab.json",
                       {"rule": VOCAB_RULE, "per_emotion": per_emotion, "vocabulary": vocabulary})
            n = {p: sum(len(v) for v in lists.values()) for p, lists in per_emotion.items()}
            written["attribute_vocab.json"] = (f"{n['object']} object + {n['scene']} scene entries, "
                                               f"{len(vocabulary)} unique")
        if "attribute_tags" in found:
            path = found["attribute_tags"][0]
            tags = safe_load_pickle(path)
            if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
                raise EmoError(f"{path}: expected a list of attribute names")
            write_json(stage / "attribute_tags.json", list(tags))
            written["attribute_tags.json"] = f"{len(tags)} attribute names"
        if "emotion_head" in found:
            from safetensors.torch import save_file

            path = found["emotion_head"][0]
            head = _emotion_head(path)
            save_file(head, str(stage / "emotion_head.safetensors"), metadata={
                "format": HEAD_FORMAT, "emotions": ",".join(EMOSET.labels), "source": path.name,
                "input": "CLIP ViT-L/14 image features (projected, 768-d)"})
            written["emotion_head.safetensors"] = f"Linear({head['weight'].shape[1]} -> {len(EMOSET)})"
        for name in missing:
            log.warning("%s: %s is missing; skipped", repo, name)
        write_json(stage / MANIFEST, {
            "format": FORMAT, "repo": str(repo), "written": written, "missing": missing,
            "emocli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    return out
