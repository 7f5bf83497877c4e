"""GRPO question builders and image-disjoint splits: balance, shuffling, misleading options, determinism,
and the TRL 1.16 conversational VLM format."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.methods.grpo import questions as Q
from emocli.methods.grpo.questions import (
    EXAMPLE_KEYS,
    LETTERS,
    binary_questions,
    build_questions,
    misleading_option,
    misleading_questions,
    multiple_choice_questions,
    split_images,
    to_dataset,
)


def make_records(per_emotion: int = 12, split: bool = True, uneven: bool = False) -> list[dict]:
    """Canonical-looking records; with `split`, an official 8/2/2-per-12 split."""
    records = []
    for e_index, emotion in enumerate(EMOSET.labels):
        count = per_emotion + (e_index if uneven else 0)
        for k in range(count):
            r = {"id": f"{emotion}_{k:05d}", "emotion": emotion, "label": e_index,
                 "image": f"/data/image/{emotion}/{emotion}_{k:05d}.jpg"}
            if split:
                r["split"] = "train" if k % 6 < 4 else ("val" if k % 6 == 4 else "test")
            records.append(r)
    return records


def ids(records) -> set[str]:
    return {r["id"] for r in records}


# ---------------------------------------------------------------------------------------------------
# split_images
# ---------------------------------------------------------------------------------------------------
def assert_disjoint(splits: dict) -> None:
    assert set(splits) == {"train", "val", "test"}
    sets = {s: ids(rs) for s, rs in splits.items()}
    paths = {s: {r["image"] for r in rs} for s, rs in splits.items()}
    for a in sets:
        for b in sets:
            if a < b:
                assert not sets[a] & sets[b], (a, b)
                assert not paths[a] & paths[b], (a, b)
        assert all(r["split"] == a for r in splits[a])


def test_official_split_is_kept():
    records = make_records()
    splits = split_images(records)
    assert_disjoint(splits)
    for s in ("train", "val", "test"):
        assert ids(splits[s]) == {r["id"] for r in records if r["split"] == s}
    assert sum(len(v) for v in splits.values()) == len(records)


def test_image_in_two_official_splits_goes_to_the_held_out_one(caplog):
    records = make_records()
    leaked = dict(next(r for r in records if r["split"] == "test"), split="train")
    dup_path = dict(next(r for r in records if r["split"] == "val"), id="renamed_copy", split="train")
    splits = split_images(records + [leaked, dup_path])
    assert_disjoint(splits)
    assert leaked["id"] in ids(splits["test"])
    assert "renamed_copy" not in ids(splits["train"]) | ids(splits["val"]) | ids(splits["test"])
    assert sum(len(v) for v in splits.values()) == len(records)
    assert "more than one official split" in caplog.text


def test_stratified_split_when_no_official_split():
    records = make_records(per_emotion=20, split=False, uneven=True)
    splits = split_images(records, fractions=(0.8, 0.1, 0.1), seed=3)
    assert_disjoint(splits)
    assert sum(len(v) for v in splits.values()) == len(records)
    for emotion in EMOSET.labels:
        n = sum(r["emotion"] == emotion for r in records)
        counts = {s: sum(r["emotion"] == emotion for r in rs) for s, rs in splits.items()}
        assert abs(counts["val"] - 0.1 * n) < 1 and abs(counts["test"] - 0.1 * n) < 1, (emotion, counts)


def test_keep_official_false_resplits_and_official_partial_is_carved():
    records = make_records(per_emotion=20)
    resplit = split_images(records, keep_official=False, seed=1)
    assert_disjoint(resplit)
    assert ids(resplit["test"]) != {r["id"] for r in records if r["split"] == "test"}
    # only the official train split: val and test are carved out of it
    train_only = [r for r in records if r["split"] == "train"]
    carved = split_images(train_only, fractions=(0.8, 0.1, 0.1))
    assert_disjoint(carved)
    assert len(carved["val"]) > 0 and len(carved["test"]) > 0
    assert sum(len(v) for v in carved.values()) == len(train_only)
    # official train + test, no val: only val is carved, test untouched
    no_val = [r for r in records if r["split"] != "val"]
    carved = split_images(no_val)
    assert ids(carved["test"]) == {r["id"] for r in records if r["split"] == "test"}
    assert len(carved["val"]) > 0


def test_split_is_deterministic_and_order_independent():
    records = make_records(per_emotion=15, split=False)
    a = split_images(records, seed=7)
    shuffled = list(records)
    random.Random(0).shuffle(shuffled)
    b = split_images(shuffled, seed=7)
    assert {s: ids(v) for s, v in a.items()} == {s: ids(v) for s, v in b.items()}
    c = split_images(records, seed=8)
    assert {s: ids(v) for s, v in a.items()} != {s: ids(v) for s, v in c.items()}


def test_split_rejects_bad_input():
    records = make_records()
    with pytest.raises(EmoError, match="sum to 1"):
        split_images(records, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(EmoError, match="unknown EmoSet emotion"):
        split_images([{"id": "x", "emotion": "joy", "image": "x.jpg"}])
    with pytest.raises(EmoError, match="two emotions"):
        split_images([{"id": "x", "emotion": "fear", "image": "x.jpg"},
                      {"id": "x", "emotion": "awe", "image": "x.jpg"}])
    with pytest.raises(EmoError, match="no 'split'"):
        split_images([{"id": "x", "emotion": "fear", "image": "x.jpg", "split": "train"},
                      {"id": "y", "emotion": "awe", "image": "y.jpg"}])
    with pytest.raises(EmoError, match="unknown split"):
        split_images([{"id": "x", "emotion": "fear", "image": "x.jpg", "split": "holdout"}])


# ---------------------------------------------------------------------------------------------------
# Question builders
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_per_emotion,uneven", [(12, False), (5, True), (1, False)])
def test_binary_exactly_balanced(n_per_emotion, uneven):
    records = make_records(per_emotion=n_per_emotion, split=False, uneven=uneven)
    qs = binary_questions(records, seed=4)
    assert len(qs) == len(records)
    counts = Counter(q["answer"] for q in qs)
    assert set(counts) <= {"yes", "no"}
    assert abs(counts["yes"] - counts["no"]) <= 1
    if len(records) % 2 == 0:
        assert counts["yes"] == counts["no"]
    for emotion in EMOSET.labels:  # balanced within each emotion as well
        c = Counter(q["answer"] for q in qs if q["emotion"] == emotion)
        assert abs(c["yes"] - c["no"]) <= 1
    for q, r in zip(qs, records):
        assert q["image_id"] == r["id"] and q["qtype"] == "binary"
        text = q["prompt"][-1]["content"][1]["text"]
        assert f"Does this image evoke {q['candidate']}? Answer yes or no." in text
        assert (q["candidate"] == q["emotion"]) == (q["answer"] == "yes")
    # "no" questions spread over several wrong emotions
    assert len({q["candidate"] for q in qs if q["answer"] == "no"}) > 3 or len(records) < 16


def test_multiple_choice_options_shuffled_complete_and_letters_balanced():
    records = make_records(per_emotion=12, split=False)
    qs = multiple_choice_questions(records, seed=2)
    orders = set()
    for q in qs:
        assert sorted(q["options"]) == sorted(EMOSET.labels)
        assert q["answer"] in LETTERS
        assert q["options"][LETTERS.index(q["answer"])] == q["emotion"]
        assert q["candidate"] is None
        text = q["prompt"][-1]["content"][1]["text"]
        for i, name in enumerate(q["options"]):
            assert f"\n{LETTERS[i]}. {name}\n" in text
        orders.add(tuple(q["options"]))
    assert len(orders) > len(qs) // 2  # per-question shuffles
    letters = Counter(q["answer"] for q in qs)
    assert set(letters) == set(LETTERS)
    assert max(letters.values()) - min(letters.values()) <= 1
    # the true emotion is not always at the same position within an emotion
    for emotion in EMOSET.labels:
        assert len({q["answer"] for q in qs if q["emotion"] == emotion}) > 1


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("right", [0.0, 0.125, 0.25])
def test_misleading_suggestion_polarity_carries_no_information(seed, right):
    records = make_records(per_emotion=24, split=False)
    qs = misleading_questions(records, seed=seed, right=right)
    for q in qs:
        assert q["answer"] == q["emotion"]
        assert f"Someone says this image evokes {q['candidate']}." in q["prompt"][-1]["content"][1]["text"]
    for emotion in EMOSET.labels:  # per true emotion: the suggestion has the true polarity half of the time
        mine = [q for q in qs if q["emotion"] == emotion]
        agree = sum(EMOSET.polarity(q["candidate"]) == EMOSET.polarity(emotion) for q in mine)
        assert abs(agree - 12) <= 1, (emotion, agree)
        assert abs(sum(q["candidate"] == emotion for q in mine) - 24 * right) <= 1
    wrong = [q for q in qs if q["candidate"] != q["emotion"]]
    assert len({q["candidate"] for q in wrong if q["emotion"] == "fear"}) > 3  # both polarities, several names
    if right == 0.125:  # the suggestion is uniform: every emotion suggested 24 times in expectation
        counts = Counter(q["candidate"] for q in qs)
        assert set(counts) == set(EMOSET.labels) and max(counts.values()) - min(counts.values()) <= 16
    with pytest.raises(EmoError, match="in \\[0, 1\\]"):
        misleading_questions(records, right=-0.1)


def test_misleading_follows_confusion_matrix_within_the_drawn_polarity():
    records = make_records(per_emotion=40, split=False)
    confusion = {e: {e: 100} for e in EMOSET.labels}  # diagonal only -> random within the polarity
    confusion["fear"] = {"fear": 50, "sadness": 30, "anger": 10, "awe": 10}
    confusion["amusement"] = {"amusement": 5, "disgust": 7}  # wrong mass only in the other polarity
    qs = misleading_questions(records, seed=0, confusion=confusion, right=0.0)
    got = {e: Counter(q["candidate"] for q in qs if q["emotion"] == e) for e in EMOSET.labels}
    assert set(got["fear"]) == {"sadness", "anger", "awe"}  # awe: the only other-polarity mass
    assert got["fear"]["sadness"] > got["fear"]["anger"]  # proportional: 3:1 in expectation
    assert got["fear"]["awe"] == 20  # half the questions take the other polarity
    assert got["amusement"]["disgust"] == 20 and sum(got["amusement"].values()) == 40
    assert {c for c in got["amusement"] if c != "disgust"} <= {"awe", "contentment", "excitement"}
    argmax = misleading_questions(records, seed=0, confusion=confusion, pick="most_confused", right=0.0)
    assert Counter(q["candidate"] for q in argmax if q["emotion"] == "fear") == {"sadness": 20, "awe": 20}
    # never the true emotion, whatever the confusion says
    heavy_diag = {e: {p: (1000 if p == e else 1) for p in EMOSET.labels} for e in EMOSET.labels}
    for q in misleading_questions(records, seed=1, confusion=heavy_diag, pick="most_confused", right=0.0):
        assert q["candidate"] != q["emotion"]


@pytest.mark.parametrize("uneven", [False, True])
def test_binary_named_emotion_says_nothing_about_the_answer(uneven):
    # class frequencies 12..19 (uneven): "yes iff the named emotion is frequent" must not help
    records = make_records(per_emotion=12, split=False, uneven=uneven)
    for seed in range(3):
        qs = binary_questions(records, seed=seed)
        for emotion in EMOSET.labels:
            c = Counter(q["answer"] for q in qs if q["candidate"] == emotion)
            assert abs(c["yes"] - c["no"]) <= 1, (emotion, c)
        assert all((q["candidate"] == q["emotion"]) == (q["answer"] == "yes") for q in qs)


def test_confusion_as_matrix_and_probabilities():
    matrix = [[0.0] * 8 for _ in range(8)]
    for i in range(8):
        matrix[i][i] = 0.7
        matrix[i][(i + 4) % 8] = 0.3
    rng = random.Random(0)
    for i, emotion in enumerate(EMOSET.labels):  # (i + 4) % 8 has the other polarity
        assert misleading_option(emotion, rng, matrix, same_polarity=False) == EMOSET.labels[(i + 4) % 8]
        same = misleading_option(emotion, rng, matrix)  # no mass there: a random one of the polarity
        assert same != emotion and EMOSET.polarity(same) == EMOSET.polarity(emotion)
    with pytest.raises(EmoError, match="unknown EmoSet emotion"):
        misleading_option("fear", rng, {"fear": {"joy": 1}})
    with pytest.raises(EmoError, match=">= 0"):
        misleading_option("fear", rng, {"fear": {"awe": -1}})
    with pytest.raises(EmoError, match="8 rows"):
        misleading_option("fear", rng, [[1, 2]])


def test_build_questions_layout_and_determinism():
    splits = split_images(make_records())
    qs = build_questions(splits, seed=5)
    assert set(qs) == {"train", "val", "test"}
    for split, examples in qs.items():
        assert len(examples) == 3 * len(splits[split])
        assert [e["qtype"] for e in examples[:3]] == ["binary", "multiple_choice", "misleading"]
        assert all(e["split"] == split for e in examples)
        assert all(tuple(e) == EXAMPLE_KEYS for e in examples)
    # no image in two splits' questions
    assert not {e["image_id"] for e in qs["train"]} & {e["image_id"] for e in qs["test"]}
    assert build_questions(splits, seed=5) == qs
    other = build_questions(splits, seed=6)
    assert other != qs
    # input order does not matter
    reordered = {s: list(reversed(v)) for s, v in splits.items()}
    by_key = {(e["image_id"], e["qtype"]): e for e in build_questions(reordered, seed=5)["train"]}
    assert all(by_key[(e["image_id"], e["qtype"])] == e for e in qs["train"])
    only = build_questions(splits, types=("misleading",), seed=5)
    assert all(e["qtype"] == "misleading" for e in only["train"]) and len(only["train"]) == len(splits["train"])


def test_build_questions_rejects_overlap_and_bad_options():
    splits = split_images(make_records())
    bad = {"train": splits["train"], "test": splits["test"] + splits["train"][:1]}
    with pytest.raises(EmoError, match="in both split"):
        build_questions(bad)
    with pytest.raises(EmoError, match="unknown question type"):
        build_questions(splits, types=("binary", "rating"))
    with pytest.raises(EmoError, match="unknown instruction format"):
        build_questions(splits, instruction_format="xml")
    with pytest.raises(EmoError, match="unknown misleading pick"):
        build_questions(splits, misleading_pick="max")


@pytest.mark.parametrize("fmt", ["answer_tags", "think_answer"])
def test_trl_conversational_vlm_format(fmt):
    from PIL import Image
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    qs = build_questions(split_images(make_records(per_emotion=2)), instruction_format=fmt,
                         system_prompt="You judge the emotion of images.")
    for e in qs["train"]:
        assert is_conversational(e)
        system, user = e["prompt"]
        assert system == {"role": "system", "content": [{"type": "text", "text": "You judge the emotion of images."}]}
        assert user["role"] == "user"
        assert user["content"][0] == {"type": "image"}
        assert user["content"][1]["type"] == "text"
        text = user["content"][1]["text"]
        assert "<answer></answer>" in text
        assert ("<think></think>" in text) == (fmt == "think_answer")
        assert e["instruction_format"] == fmt
        assert isinstance(e["image"], str)
        # what GRPOTrainer does with the `image` column: exactly one placeholder gets the image
        image = Image.new("RGB", (4, 4))
        filled = prepare_multimodal_messages(e["prompt"], images=[image])
        parts = [p for m in filled for p in m["content"] if p["type"] == "image"]
        assert len(parts) == 1 and parts[0]["image"] is image
    no_system = build_questions({"train": make_records(per_emotion=1)})["train"][0]
    assert [m["role"] for m in no_system["prompt"]] == ["user"]
    assert "Reply with your final answer" in Q.instruction("binary")


def test_to_dataset_decodes_rgb_images_and_keeps_columns(tmp_path):
    from PIL import Image
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    records = make_records(per_emotion=1, split=False)
    for i, r in enumerate(records):
        r["image"] = str(tmp_path / f"{r['id']}.png")
        Image.new(["RGB", "L", "RGBA", "P"][i % 4], (6, 5)).save(r["image"])
    examples = build_questions({"train": records})["train"]
    ds = to_dataset(examples)
    assert ds.column_names == list(EXAMPLE_KEYS)
    row = ds[1]
    assert is_conversational(row)
    assert row["image"].mode == "RGB" and row["image"].size == (6, 5)
    assert row["options"] == examples[1]["options"] and row["candidate"] is None
    # Arrow adds "text": None to the image placeholder; TRL still fills exactly one placeholder
    filled = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    assert sum(p["type"] == "image" for p in filled[0]["content"]) == 1
    with pytest.raises(EmoError):
        to_dataset([])


@pytest.mark.slow
def test_grpo_trainer_runs_on_built_questions(tmp_path):
    """Two real GRPOTrainer steps on a tiny LLaVA: the `image` column feeds the processor, every other
    column reaches the reward functions as keyword lists, completions are conversational."""
    from PIL import Image
    from trl import GRPOConfig, GRPOTrainer

    from emocli.methods.grpo.rewards import completion_text, make_reward_funcs
    from emocli.testing.tiny import save_tiny

    records = make_records(per_emotion=2, split=False)
    for i, r in enumerate(records):
        r["image"] = str(tmp_path / f"{r['id']}.png")
        Image.new("RGB", (40, 30), (i * 20, 90, 200)).convert(["RGB", "L", "RGBA"][i % 3]).save(r["image"])
    ds = to_dataset(build_questions({"train": records}, seed=0)["train"])
    model_dir = save_tiny("vlm", tmp_path / "vlm")
    seen = {}

    def spy_reward(completions, **kwargs):
        seen.update(kwargs, completion=completions[0])
        return [float(len(completion_text(c)) % 3) for c in completions]  # some variance

    funcs, weights = make_reward_funcs({"accuracy": 1.0, "format": 0.5, "polarity": 0.5})
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=8, max_steps=2, report_to="none",
                      save_strategy="no", reward_weights=[*weights, 1.0], logging_steps=1)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[*funcs, spy_reward], args=args, train_dataset=ds)
    trainer.train()
    for column in ("answer", "qtype", "emotion", "candidate", "options", "image_id", "instruction_format", "image"):
        assert len(seen[column]) == 4, column
    assert "prompt" not in seen
    assert seen["completion"][0]["role"] == "assistant"
    assert "rewards/accuracy_reward/mean" in trainer.state.log_history[0]
