"""`emo data prepare avamerg`: AvaMERG conversations + face frames -> speaker/listener pairs.

AvaMERG (WWW 2025) gives `train.json` / `test.json`: a list of conversations, each with
`conversation_id`, `speaker_profile` / `listener_profile` (`ID`, ...), `topic` and `turns`; a turn has
`turn_id`, `dialogue_history` [{index, role, utterance}], the listener's `response` and
`chain_of_empathy` {speaker_emotion, ...}. Media are named `dia{conversation_id}utt{index}_{profile ID}`.

One sample per turn (EmpathDiffuser's pairing): the speaker's last utterance in the history and its
frame `dia{c}utt{i}_{speaker ID}`, the response and the listener frame `dia{c}utt{j}_{listener ID}`
with j = last history index + 1, and the speaker emotion (one of the 32 fine labels, mapped onto 7
coarse classes; an unknown label is an error, never class 0). A frame is a PNG/JPEG, or, when only an
mp4 exists, its middle frame (decoded with PyAV, written to OUT/frames/). The official test.json is the
test split; val is carved out of train by conversation, so no conversation is in two splits.

Prepared folder (format "emo-prepared-avamerg/1"; see docs/data.md):

    prepare.json     manifest: source, seed, val fraction, counts, bad media, version
    samples.jsonl    one pair per line (absolute frame paths)
    frames/*.png     middle frames of mp4-only media
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

from emocli.emotions import AVAMERG_COARSE, AVAMERG_FINE, avamerg_coarse
from emocli.errors import EmoError

log = logging.getLogger("emocli")

FORMAT = "emo-prepared-avamerg/1"
MANIFEST = "prepare.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4",)
SCHEMA = ("conversation: conversation_id, speaker_profile.ID, listener_profile.ID, turns[]; "
          "turn: turn_id, dialogue_history[{index, role, utterance}], response, chain_of_empathy.speaker_emotion")
MAX_NAMED_WARNINGS = 20


# --- reading the JSON ------------------------------------------------------------------------------

def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_source(source: str) -> tuple[str, dict[str, list[dict]]]:
    """(name, {"train": [...], "test": [...]}) from a folder with train.json [+ test.json] or a Hub id."""
    from emocli.data.prepare import _looks_like_hub_id, _quiet_datasets

    path = Path(str(source)).expanduser()
    datasets = _quiet_datasets()
    if path.exists():
        path = path.resolve()
        if not path.is_dir():
            raise EmoError(f"--source {path} is not a folder; give the folder holding AvaMERG's train.json "
                           f"and test.json, or a Hub dataset id")
        files = {split: str(path / f"{split}.json") for split in ("train", "test") if (path / f"{split}.json").is_file()}
        if "train" not in files:
            raise EmoError(f"{path} has no train.json (AvaMERG's files are train.json and test.json)")
        try:
            loaded = datasets.load_dataset("json", data_files=files)
        except Exception as e:  # datasets raises many types for unreadable JSON
            raise EmoError(f"cannot read {path}'s AvaMERG JSON: {_first_line(e)}") from None
        name = str(path)
    elif _looks_like_hub_id(str(source)):
        try:
            loaded = datasets.load_dataset(str(source))
        except Exception as e:
            raise EmoError(f"cannot load Hub dataset {source!r} ({_first_line(e)}); offline, pass the folder "
                           f"holding AvaMERG's train.json and test.json") from None
        name = str(source)
    else:
        raise EmoError(f"--source {source} does not exist (give a folder with train.json/test.json or a Hub id)")
    splits = {}
    for split, ds in dict(loaded).items():
        split = {"validation": "val"}.get(split, split)
        splits[split] = [dict(row) for row in ds]
    return name, splits


def _check_conversation(conv, where: str) -> None:
    if not isinstance(conv, dict):
        raise EmoError(f"{where} is not an AvaMERG conversation object; expected {SCHEMA}")
    missing = [k for k in ("conversation_id", "speaker_profile", "listener_profile", "turns") if k not in conv]
    for key in ("speaker_profile", "listener_profile"):
        if key in conv and not (isinstance(conv[key], dict) and conv[key].get("ID") is not None):
            missing.append(f"{key}.ID")
    if missing:
        present = ", ".join(sorted(conv)) or "(none)"
        raise EmoError(f"{where} lacks AvaMERG field(s) {', '.join(missing)} (its fields: {present}); "
                       f"expected {SCHEMA}")


def pairs_of(conv: dict, where: str) -> list[dict]:
    """The speaker/listener pairs of one conversation (one per turn), media names unresolved."""
    _check_conversation(conv, where)
    cid = str(conv["conversation_id"])
    speaker_id, listener_id = conv["speaker_profile"]["ID"], conv["listener_profile"]["ID"]
    out = []
    for t, turn in enumerate(conv["turns"] or []):
        at = f"{where} (conversation {cid}, turn {t})"
        missing = [k for k in ("turn_id", "dialogue_history", "response", "chain_of_empathy") if k not in (turn or {})]
        if not missing and not (isinstance(turn["chain_of_empathy"], dict)
                                and "speaker_emotion" in turn["chain_of_empathy"]):
            missing.append("chain_of_empathy.speaker_emotion")
        if missing:
            raise EmoError(f"{at} lacks AvaMERG field(s) {', '.join(missing)}; expected {SCHEMA}")
        history = [h for h in turn["dialogue_history"] or [] if isinstance(h, dict)]
        spoken = [h for h in history if str(h.get("role", "")).lower() == "speaker"]
        if not spoken or any("index" not in h or "utterance" not in h for h in history):
            raise EmoError(f"{at}: dialogue_history needs speaker entries with index, role and utterance")
        fine = str(turn["chain_of_empathy"]["speaker_emotion"]).strip().lower()
        if fine not in AVAMERG_FINE:
            try:
                AVAMERG_FINE.index(fine)
            except EmoError as e:
                raise EmoError(f"{at}: {e.message}") from None
        last = spoken[-1]
        listener_index = max(int(h["index"]) for h in history) + 1
        coarse = avamerg_coarse(fine)
        out.append({
            "id": f"{cid}_{turn['turn_id']}", "conversation_id": cid, "turn_id": turn["turn_id"],
            "topic": conv.get("topic"), "speaker_utterance": str(last["utterance"]),
            "response": str(turn["response"]),
            "speaker_media": f"dia{cid}utt{int(last['index'])}_{speaker_id}",
            "listener_media": f"dia{cid}utt{listener_index}_{listener_id}",
            "speaker_emotion": fine, "fine_label": AVAMERG_FINE.index(fine),
            "emotion": coarse, "label": AVAMERG_COARSE.index(coarse),
            "chain_of_empathy": {k: v for k, v in turn["chain_of_empathy"].items() if v is not None},
        })
    return out


# --- media -----------------------------------------------------------------------------------------

def middle_frame(video: Path):
    """The middle frame of a video as an RGB PIL image (PyAV decodes it)."""
    try:
        import av
    except ImportError:
        raise EmoError("reading mp4 media needs PyAV: pip install av") from None
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [frame for frame in container.decode(stream)]
    if not frames:
        raise ValueError("no video frames")
    return frames[len(frames) // 2].to_image().convert("RGB")


def index_media(media: Path) -> dict[str, Path]:
    """stem -> file under `media` (recursive); an image wins over an mp4 of the same name."""
    found: dict[str, Path] = {}
    for path in sorted(media.rglob("*")):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            found[path.stem] = path
        elif suffix in VIDEO_SUFFIXES and path.stem not in found:
            found[path.stem] = path
    return found


def _resolve_frame(stem: str, media: dict[str, Path], frames_dir: Path, final_frames: Path) -> tuple[str, str]:
    """(absolute frame path in the final folder, original media path); raises ValueError for bad media."""
    from emocli.data.emoset import CorruptImage, load_rgb

    path = media.get(stem)
    if path is None:
        raise ValueError(f"no {stem}.png or {stem}.mp4 under --media")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        target = frames_dir / f"{stem}.png"
        if not target.is_file():
            try:
                middle_frame(path).save(target)
            except EmoError:
                raise
            except Exception as e:  # PyAV raises its own error types for broken files
                raise ValueError(f"{path}: cannot decode video ({_first_line(e)})") from None
        return str(final_frames / target.name), str(path)
    try:
        load_rgb(str(path))
    except CorruptImage as e:
        raise ValueError(f"{e.path}: {e.reason}") from None
    return str(path), str(path)


# --- prepare ---------------------------------------------------------------------------------------

def prepare_avamerg(source, media, out, seed: int = 0, val_fraction: float = 0.05, overwrite: bool = False) -> Path:
    """Prepare AvaMERG pairs into `out` (see the module docstring); returns `out`."""
    from emocli import __version__
    from emocli.data.prepare import check_output_folder, staged_folder, write_json, write_jsonl

    if not 0 <= val_fraction < 1:
        raise EmoError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    out = Path(out).expanduser().resolve()
    media = Path(media).expanduser().resolve()
    if not media.is_dir():
        raise EmoError(f"--media {media} is not a folder (it should hold dia{{conv}}utt{{idx}}_{{ID}}.png/.mp4 files)")
    local = Path(str(source)).expanduser()
    check_output_folder(out, overwrite, local.resolve() if local.exists() else None)
    name, splits = read_source(source)

    pairs: dict[str, list[dict]] = {}
    for split, conversations in splits.items():
        rows = []
        for i, conv in enumerate(conversations):
            rows.extend(pairs_of(conv, f"{name} [{split} conversation {i}]"))
        pairs[split] = rows
    # val: whole conversations of train, chosen by a seeded shuffle of the sorted ids
    if "val" not in pairs and "train" in pairs and val_fraction > 0:
        ids = sorted({p["conversation_id"] for p in pairs["train"]})
        random.Random(seed).shuffle(ids)
        val_ids = set(ids[: max(1, round(len(ids) * val_fraction))]) if len(ids) > 1 else set()
        pairs["val"] = [p for p in pairs["train"] if p["conversation_id"] in val_ids]
        pairs["train"] = [p for p in pairs["train"] if p["conversation_id"] not in val_ids]
    if "test" not in splits:
        log.warning("%s has no test.json: the prepared folder has no test split", name)

    media_index = index_media(media)
    with staged_folder(out) as stage:
        frames = stage / "frames"
        frames.mkdir()
        samples, bad = [], {}
        for split in ("train", "val", "test"):
            for p in pairs.get(split, []):
                try:
                    for role in ("speaker", "listener"):
                        stem = p[f"{role}_media"]
                        if stem in bad:
                            raise ValueError(bad[stem])
                        try:
                            p[f"{role}_image"], p[f"{role}_media"] = _resolve_frame(stem, media_index, frames,
                                                                                    out / "frames")
                        except ValueError as e:
                            bad[stem] = str(e)
                            raise
                except ValueError as e:
                    if len(bad) <= MAX_NAMED_WARNINGS:
                        log.warning("skipping pair %s: %s", p["id"], e)
                    continue
                samples.append({"split": split, **p})
        if not samples:
            raise EmoError(f"no pair of {name} has readable speaker and listener frames under {media}")
        ids = [s["id"] for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EmoError(f"sample id {dup!r} (conversation_turn) occurs twice in {name}; ids must be unique")
        write_jsonl(stage / "samples.jsonl", samples)
        per_split = {s: sum(1 for x in samples if x["split"] == s) for s in ("train", "val", "test")}
        per_emotion = {s: {e: sum(1 for x in samples if x["split"] == s and x["emotion"] == e)
                           for e in AVAMERG_COARSE.labels} for s in per_split}
        write_json(stage / MANIFEST, {
            "format": FORMAT, "source": name, "media": str(media), "seed": int(seed),
            "val_fraction": float(val_fraction), "val_rule": "whole train conversations, seeded shuffle of ids",
            "counts": {"total": len(samples), "per_split": per_split, "per_split_emotion": per_emotion,
                       "conversations": {s: len({x["conversation_id"] for x in samples if x["split"] == s})
                                         for s in per_split},
                       "frames_from_video": len(list(frames.iterdir()))},
            "bad_media_count": len(bad), "bad_media": bad,
            "emocli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    return out


def read_prepared(folder) -> tuple[dict, list[dict]]:
    """(manifest, samples) of a prepared AvaMERG folder."""
    folder = Path(folder).expanduser().resolve()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise EmoError(f"{folder} is not a prepared AvaMERG folder (no {MANIFEST}); make one with "
                       f"`emo data prepare avamerg --source ... --media ... --out ...`")
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise EmoError(f"{manifest_path} is not an {FORMAT} manifest (format {manifest.get('format')!r})")
        with (folder / "samples.jsonl").open() as f:
            samples = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise EmoError(f"cannot read {folder}: {e}") from None
    return manifest, samples
