"""AvaMERG data: synthetic release in the real schema -> prepared pairs, split by conversation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from emocli.errors import EmoError
from tests.conftest import run_emo


@pytest.fixture(scope="module")
def avamerg(tmp_path_factory):
    from emocli.data.avamerg import prepare_avamerg
    from emocli.data.avamerg_synth import synth_avamerg

    root = tmp_path_factory.mktemp("avamerg")
    source = synth_avamerg(root / "source", n=120, seed=1)
    prepared = prepare_avamerg(source, source / "media", root / "prepared", seed=0, val_fraction=0.1)
    return source, prepared


def test_pairs_follow_the_schema_and_splits_share_no_conversation(avamerg):
    from emocli.data.avamerg import read_prepared
    from emocli.emotions import AVAMERG_COARSE, avamerg_coarse

    source, prepared = avamerg
    manifest, samples = read_prepared(prepared)
    assert manifest["counts"]["total"] == len(samples) == 120
    by_split = {s: {x["conversation_id"] for x in samples if x["split"] == s} for s in ("train", "val", "test")}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    test_json = {c["conversation_id"] for c in json.loads((source / "test.json").read_text())}
    assert by_split["test"] == test_json  # the official test file is the test split
    conversations = {c["conversation_id"]: c for c in json.loads((source / "train.json").read_text())}
    conversations.update({c["conversation_id"]: c for c in json.loads((source / "test.json").read_text())})
    for s in samples:
        conv = conversations[s["conversation_id"]]
        turn = conv["turns"][s["turn_id"]]
        last = [h for h in turn["dialogue_history"] if h["role"] == "speaker"][-1]
        assert s["speaker_utterance"] == last["utterance"] and s["response"] == turn["response"]
        assert s["speaker_media"].endswith(f"dia{conv['conversation_id']}utt{last['index']}_"
                                           f"{conv['speaker_profile']['ID']}" + s["speaker_media"][-4:])
        assert f"utt{last['index'] + 1}_{conv['listener_profile']['ID']}." in s["listener_media"]
        assert s["emotion"] == avamerg_coarse(turn["chain_of_empathy"]["speaker_emotion"])
        assert AVAMERG_COARSE.labels[s["label"]] == s["emotion"]


def test_mp4_only_media_give_the_middle_frame(avamerg):
    from emocli.data.avamerg import read_prepared

    _, prepared = avamerg
    _, samples = read_prepared(prepared)
    from_video = [s for s in samples if s["listener_media"].endswith(".mp4")]
    assert from_video and manifest_frames(prepared) > 0
    frame = np.asarray(Image.open(from_video[0]["listener_image"]).convert("RGB")).astype(float)
    # the synthetic video's first/last frames are the face at a third of its brightness: the middle one is not
    png = [s for s in samples if s["listener_media"].endswith(".png")][0]
    assert frame.mean() > 0.6 * np.asarray(Image.open(png["listener_image"])).mean()


def manifest_frames(prepared):
    return json.loads((prepared / "prepare.json").read_text())["counts"]["frames_from_video"]


def test_unknown_label_and_missing_fields_are_errors(tmp_path, avamerg):
    from emocli.data.avamerg import prepare_avamerg

    source, _ = avamerg
    conversations = json.loads((source / "train.json").read_text())
    bad = tmp_path / "bad_label"
    bad.mkdir()
    conversations[0]["turns"][0]["chain_of_empathy"]["speaker_emotion"] = "bored"
    (bad / "train.json").write_text(json.dumps(conversations))
    with pytest.raises(EmoError, match="unknown AvaMERG fine emotion 'bored'.*valid: afraid"):
        prepare_avamerg(bad, source / "media", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    result = run_emo("data", "prepare", "avamerg", "--source", str(bad), "--media", str(source / "media"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "'bored'" in result.stderr

    other = tmp_path / "other"
    other.mkdir()
    (other / "train.json").write_text(json.dumps([{"id": 1, "text": "hello"}]))
    result = run_emo("data", "prepare", "avamerg", "--source", str(other), "--media", str(source / "media"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lacks AvaMERG field(s) conversation_id" in result.stderr and result.stderr.strip().count("\n") == 0


def test_missing_and_corrupt_frames_are_skipped_by_name(tmp_path, avamerg):
    import shutil

    from emocli.data.avamerg import prepare_avamerg, read_prepared

    source, _ = avamerg
    media = tmp_path / "media"
    shutil.copytree(source / "media", media)
    pngs = sorted(media.glob("*.png"))
    pngs[0].unlink()
    pngs[-1].write_bytes(b"not an image")
    out = prepare_avamerg(source, media, tmp_path / "out")
    manifest, samples = read_prepared(out)
    assert manifest["bad_media_count"] == 2 and len(samples) == 118
    assert any(str(pngs[-1]) in reason for reason in manifest["bad_media"].values())
    assert pngs[0].stem in manifest["bad_media"]
