"""A tiny synthetic AvaMERG in the real schema, for tests and smoke runs (`emo data synth avamerg`).

    out_dir/train.json, test.json      conversations (conversation_id, profiles, topic, turns[...])
    out_dir/media/dia{c}utt{i}_{ID}.png   speaker / listener frames; every 4th one exists only as
                                        a 3-frame mp4 whose middle frame is the face

Learning is testable: each conversation has one speaker emotion (coarse class drawn uniformly, then
a fine label of that class); the speaker's face background, mouth and utterance follow it, and the
listener's reply text and face (a background colour and mark per coarse class) follow the speaker's
emotion too. Deterministic by `seed`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emocli.emotions import AVAMERG_COARSE, AVAMERG_GROUPS
from emocli.errors import EmoError

IMAGE_SIZE = 64
# Per coarse class (AVAMERG_COARSE order): speaker background, listener background (far apart in RGB).
SPEAKER_COLORS = ((230, 200, 40), (90, 160, 40), (120, 60, 170), (200, 120, 30), (210, 40, 40), (40, 200, 210),
                  (50, 70, 160))
LISTENER_COLORS = ((250, 240, 120), (20, 90, 20), (30, 10, 60), (250, 150, 200), (110, 10, 10), (255, 255, 255),
                   (10, 40, 120))
REPLIES = {
    "happy": ("that is wonderful news, i am so happy for you!", "how great, you must be proud and excited!"),
    "disgusted": ("ugh, that sounds really gross, i would be disgusted too.", "yuck, that is nasty, sorry you saw that."),
    "fear": ("that sounds scary, i hope you stay safe.", "oh no, that must have been frightening for you."),
    "contempt": ("it is normal to feel jealous sometimes, you will be fine.", "envy happens, focus on your own path."),
    "angry": ("i understand why you are so angry, that is not fair.", "that would make me mad too, what a mess."),
    "surprised": ("wow, i did not expect that at all!", "really? that is such a surprise!"),
    "sad": ("i am so sorry to hear that, it must be hard.", "that is sad, i am here for you if you need me."),
}
EVENTS = ("at work", "with my family", "at school", "this weekend", "with my friend", "at home")


def _face(background, mouth: int, rng: np.random.Generator, mark: int | None = None) -> Image.Image:
    """A cartoon face on a coloured background; `mouth` picks the mouth shape, `mark` a corner mark."""
    jitter = rng.integers(-12, 13, size=3)
    bg = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(background, jitter))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)
    draw = ImageDraw.Draw(image)
    dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
    draw.ellipse((16 + dx, 12 + dy, 48 + dx, 52 + dy), fill=(235, 190, 160))
    draw.ellipse((24 + dx, 24 + dy, 28 + dx, 28 + dy), fill=(20, 20, 20))
    draw.ellipse((36 + dx, 24 + dy, 40 + dx, 28 + dy), fill=(20, 20, 20))
    box = (24 + dx, 36 + dy, 40 + dx, 46 + dy)
    if mouth % 3 == 0:
        draw.arc(box, 0, 180, fill=(120, 0, 0), width=2)  # smile
    elif mouth % 3 == 1:
        draw.arc(box, 180, 360, fill=(120, 0, 0), width=2)  # frown
    else:
        draw.ellipse((29 + dx, 37 + dy, 35 + dx, 45 + dy), outline=(120, 0, 0), width=2)  # open mouth
    if mark is not None:
        size = 6 + 2 * mark
        draw.rectangle((0, 0, size, size), fill=(0, 0, 0) if sum(bg) > 380 else (255, 255, 255))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-4, 5, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_mp4(path: Path, face: Image.Image) -> None:
    """A 3-frame mp4 whose middle frame is `face` (the others are darker)."""
    import av

    frames = [np.asarray(face) // 3, np.asarray(face), np.asarray(face) // 3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = IMAGE_SIZE, IMAGE_SIZE, "yuv420p"
        stream.options = {"qscale": "2"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def synth_avamerg(out_dir, n: int, seed: int = 0, test_fraction: float = 0.2) -> Path:
    """Write about `n` speaker/listener pairs (turns) as AvaMERG train.json/test.json + media/; returns out_dir."""
    if n < 2:
        raise EmoError(f"--n must be at least 2, got {n}")
    out = Path(out_dir)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    conversations, pairs, media_count = [], 0, 0
    while pairs < n:
        c = len(conversations)
        cid = f"{c:05d}"
        coarse_index = int(rng.integers(len(AVAMERG_COARSE)))
        coarse = AVAMERG_COARSE.labels[coarse_index]
        group = AVAMERG_GROUPS[coarse]
        fine = group[int(rng.integers(len(group)))]
        speaker_id, listener_id = f"S{int(rng.integers(1, 40)):02d}", f"L{int(rng.integers(1, 40)):02d}"
        turns, history = [], []
        for t in range(min(int(rng.integers(1, 4)), n - pairs)):
            utterance = f"i feel {fine} {EVENTS[int(rng.integers(len(EVENTS)))]}, it was a lot."
            history = history + [{"index": 2 * t, "role": "speaker", "utterance": utterance}]
            reply = REPLIES[coarse][int(rng.integers(2))]
            turns.append({
                "turn_id": t, "context": f"a talk about feeling {fine}",
                "dialogue_history": list(history), "response": reply,
                "chain_of_empathy": {"speaker_emotion": fine, "event_scenario": f"something happened {EVENTS[t % 6]}",
                                     "emotion_cause": f"the speaker feels {fine}",
                                     "goal_to_response": "show understanding"},
            })
            faces = {f"dia{cid}utt{2 * t}_{speaker_id}": _face(SPEAKER_COLORS[coarse_index], coarse_index, rng),
                     f"dia{cid}utt{2 * t + 1}_{listener_id}": _face(LISTENER_COLORS[coarse_index], 0, rng,
                                                                    mark=coarse_index)}
            for stem, face in faces.items():
                if media_count % 4 == 3:
                    _write_mp4(media / f"{stem}.mp4", face)
                else:
                    face.save(media / f"{stem}.png")
                media_count += 1
            history = history + [{"index": 2 * t + 1, "role": "listener", "utterance": reply}]
            pairs += 1
        conversations.append({
            "conversation_id": cid, "topic": f"feeling {fine}",
            "speaker_profile": {"age": "young", "gender": "female", "timbre": "high", "ID": speaker_id},
            "listener_profile": {"age": "adult", "gender": "male", "timbre": "low", "ID": listener_id},
            "turns": turns,
        })
    order = rng.permutation(len(conversations))
    n_test = max(1, int(round(len(conversations) * test_fraction)))
    test_ids = set(int(i) for i in order[:n_test])
    for split, keep in (("train", False), ("test", True)):
        rows = [conv for i, conv in enumerate(conversations) if (i in test_ids) == keep]
        (out / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return out
