"""GRPO reward functions on hand-written completions: parsing, accuracy per question type, format,
polarity, weights, conversational vs plain completions and malformed outputs."""

from __future__ import annotations

import pytest

from emocli.errors import EmoError
from emocli.methods.grpo.questions import build_questions
from emocli.methods.grpo.rewards import (
    DEFAULT_REWARD_WEIGHTS,
    accuracy_reward,
    answer_to_emotion,
    completion_text,
    format_reward,
    make_polarity_reward,
    make_reward_funcs,
    parse_answer,
    polarity_reward,
)

OPTIONS = ["fear", "awe", "excitement", "disgust", "amusement", "anger", "sadness", "contentment"]
BINARY_YES = {"qtype": "binary", "answer": "yes", "emotion": "fear", "candidate": "fear", "options": []}
BINARY_NO = {"qtype": "binary", "answer": "no", "emotion": "fear", "candidate": "awe", "options": []}
MC = {"qtype": "multiple_choice", "answer": "G", "emotion": "sadness", "candidate": None, "options": OPTIONS}
MIS = {"qtype": "misleading", "answer": "sadness", "emotion": "sadness", "candidate": "fear", "options": []}


def call(func, completions, rows, **extra):
    """Call a reward the way GRPOTrainer does: columns as keyword lists, plus trainer extras."""
    kwargs = {key: [row[key] for row in rows] for key in rows[0]}
    return func(completions=completions, prompts=[None] * len(completions), completion_ids=[[]] * len(completions),
                trainer_state=None, log_extra=lambda *a: None, log_metric=lambda *a: None, **kwargs, **extra)


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------------
# parse_answer
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("<answer>yes</answer>", "yes"),
    ("<answer>  YES \n</answer>", "yes"),
    ("<think>hmm <answer>no</answer></think><answer>Fear</answer>", "fear"),
    ("<answer>awe</answer> then <answer>anger</answer>", "anger"),  # last one
    ("<ANSWER>Awe</ANSWER>", "awe"),
    ("<answer>a\nb</answer>", "a\nb"),
    ("<answer>sadness</answer> trailing words", "sadness"),
    ("no tags at all: sadness", None),
    ("", None),
    ("<answer>yes", None),  # unclosed
    ("yes</answer>", None),
    ("<answer></answer>", None),
    ("<answer>   </answer>", None),
    ("<answer>outer <answer>inner</answer>", None),  # nested / unbalanced
    ("<answer><answer>yes</answer></answer>", None),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected
    assert parse_answer(conv(text)) == expected


def test_completion_text_shapes():
    assert completion_text("plain") == "plain"
    assert completion_text(conv("hi")) == "hi"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    assert completion_text(None) == ""
    split_off = [{"role": "assistant", "content": "<answer>awe</answer>", "reasoning_content": "calm sky"}]
    assert completion_text(split_off) == "<think>calm sky</think><answer>awe</answer>"
    with pytest.raises(EmoError):
        completion_text(42)


# ---------------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", [str, conv], ids=["plain", "conversational"])
def test_accuracy_binary(wrap):
    completions = ["<answer>yes</answer>", "<answer>No</answer>", "<answer> YES. </answer>",
                   "yes", "<answer>yes, it does</answer>", "<answer>no</answer>"]
    rows = [BINARY_YES, BINARY_NO, BINARY_YES, BINARY_YES, BINARY_YES, BINARY_YES]
    assert call(accuracy_reward, [wrap(c) for c in completions], rows) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("wrap", [str, conv], ids=["plain", "conversational"])
def test_accuracy_multiple_choice(wrap):
    cases = {
        "<answer>G</answer>": 1.0,
        "<answer>g</answer>": 1.0,
        "<answer>(G)</answer>": 1.0,
        "<answer>G.</answer>": 1.0,
        "<answer>sadness</answer>": 1.0,
        "<answer>Sadness</answer>": 1.0,
        "<answer>G. sadness</answer>": 1.0,
        "<answer>(g) Sadness</answer>": 1.0,
        "<answer>A</answer>": 0.0,
        "<answer>fear</answer>": 0.0,
        "<answer>G. fear</answer>": 0.0,  # letter and name disagree
        "<answer>A. sadness</answer>": 0.0,
        "<answer>I</answer>": 0.0,
        "<answer>sad</answer>": 0.0,
        "<answer>G</answer><answer>A</answer>": 0.0,  # last answer counts
        "G": 0.0,
    }
    got = call(accuracy_reward, [wrap(c) for c in cases], [MC] * len(cases))
    assert got == list(cases.values())


def test_accuracy_misleading():
    cases = {
        "<answer>sadness</answer>": 1.0,
        "<answer> SADNESS </answer>": 1.0,
        "<answer>fear</answer>": 0.0,  # accepted the misleading suggestion
        "<answer>no</answer>": 0.0,  # "no" alone is not enough: the true emotion is asked for
        "<answer>anger</answer>": 0.0,
        "<answer>C</answer>": 0.0,
        "": 0.0,
    }
    assert call(accuracy_reward, list(cases), [MIS] * len(cases)) == list(cases.values())


def test_accuracy_on_built_questions():
    records = [{"id": f"{e}_{k}", "emotion": e, "image": f"{e}_{k}.jpg"}
               for e in ("fear", "awe", "anger", "contentment") for k in range(4)]
    examples = build_questions({"train": records}, seed=0)["train"]
    gold = [f"<answer>{e['answer']}</answer>" for e in examples]
    assert call(accuracy_reward, gold, examples) == [1.0] * len(examples)
    named = [f"<answer>{e['emotion']}</answer>" for e in examples if e["qtype"] != "binary"]
    rows = [e for e in examples if e["qtype"] != "binary"]
    assert call(accuracy_reward, named, rows) == [1.0] * len(rows)
    for e in examples:
        if e["qtype"] != "binary":
            assert answer_to_emotion(e, e["answer"].lower()) == e["emotion"]


def test_reward_kwargs_are_checked():
    with pytest.raises(EmoError, match="missing: qtype"):
        accuracy_reward(["<answer>yes</answer>"], answer=["yes"], emotion=["fear"])
    with pytest.raises(EmoError, match="1 completions but 2"):
        accuracy_reward(["<answer>yes</answer>"], answer=["yes", "no"], emotion=["fear"], qtype=["binary"])
    with pytest.raises(EmoError, match="unknown question type"):
        accuracy_reward(["<answer>yes</answer>"], answer=["yes"], emotion=["fear"], qtype=["rating"])


# ---------------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("<answer>yes</answer>", 1.0),
    ("  \n<answer>yes</answer>\n ", 1.0),
    ("<think>the sky is dark</think><answer>fear</answer>", 1.0),
    ("<think>\nmulti\nline\n</think>\n\n<answer>\nfear\n</answer>", 1.0),
    ("<think></think><answer>fear</answer>", 1.0),
    ("", 0.0),
    ("fear", 0.0),
    ("<answer>fear</answer> because of the dark sky", 0.0),  # extra text after </answer>
    ("Sure! <answer>fear</answer>", 0.0),  # text before
    ("<answer>fear", 0.0),  # unclosed
    ("<answer></answer>", 0.0),  # empty answer
    ("<answer>  </answer>", 0.0),
    ("<answer>yes</answer><answer>no</answer>", 0.0),  # two answer tags
    ("<answer><answer>yes</answer></answer>", 0.0),  # nested
    ("<think>a<think>b</think></think><answer>yes</answer>", 0.0),
    ("<think>unclosed<answer>yes</answer>", 0.0),
    ("<answer>yes</answer><think>late</think>", 0.0),  # wrong order
    ("<think>a</think>middle<answer>yes</answer>", 0.0),
    ("<ANSWER>yes</ANSWER>", 0.0),  # tags must be lower case
    ("<think>x</think><think>y</think><answer>yes</answer>", 0.0),
])
def test_format_reward(text, expected):
    assert format_reward([text]) == [expected]
    assert format_reward([conv(text)]) == [expected]
    assert call(format_reward, [text], [BINARY_YES]) == [expected]


def test_format_reward_requires_think_when_asked():
    texts = ["<answer>yes</answer>", "<think>dark</think><answer>yes</answer>"]
    assert format_reward(texts, instruction_format=["answer_tags"] * 2) == [1.0, 1.0]
    assert format_reward(texts, instruction_format=["think_answer"] * 2) == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------------
# polarity
# ---------------------------------------------------------------------------------------------------
def test_polarity_reward():
    completions = [
        "<answer>G</answer>",  # MC correct (sadness)
        "<answer>A</answer>",  # MC fear: wrong, same (negative) polarity
        "<answer>awe</answer>",  # MC awe: other polarity
        "<answer>F. anger</answer>",  # MC letter + name agree on anger: same polarity
        "<answer>B. anger</answer>",  # inconsistent letter/name: unparseable
        "no answer",
        "<answer>sadness</answer>",  # misleading correct
        "<answer>fear</answer>",  # misleading: accepted the suggestion -> no credit
        "<answer>disgust</answer>",  # misleading wrong, same polarity
        "<answer>joy</answer>",
        "<answer>yes</answer>",  # binary: not applicable (None, left out of TRL's logged mean)
        "<answer>no</answer>",
    ]
    rows = [MC] * 6 + [MIS] * 4 + [BINARY_YES, BINARY_NO]
    expected = [1.0, 0.5, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, None, None]
    assert call(polarity_reward, completions, rows) == expected
    assert call(polarity_reward, [conv(c) for c in completions], rows) == expected
    assert call(make_polarity_reward(0.25), completions, rows) == [0.25 if v == 0.5 else v for v in expected]
    assert make_polarity_reward(0.25).__name__ == "polarity_reward"


# ---------------------------------------------------------------------------------------------------
# answer_to_emotion, make_reward_funcs
# ---------------------------------------------------------------------------------------------------
def test_answer_to_emotion():
    assert answer_to_emotion(MC, "b") == "awe"
    assert answer_to_emotion(MC, "(H)") == "contentment"
    assert answer_to_emotion(MC, "anger") == "anger"
    assert answer_to_emotion(MC, "b. awe") == "awe"
    assert answer_to_emotion(MC, "b. fear") is None
    assert answer_to_emotion(MC, "<think>x</think><answer>C</answer>") == "excitement"
    assert answer_to_emotion(MC, conv("<answer>D</answer>")) == "disgust"
    assert answer_to_emotion(MC, "<answer>C") is None
    assert answer_to_emotion(MC, "") is None
    assert answer_to_emotion(MC, "happy") is None
    assert answer_to_emotion(dict(MC, options=[]), "g") == "sadness"  # only the gold letter maps without options
    assert answer_to_emotion(dict(MC, options=[]), "a") is None
    assert answer_to_emotion(MIS, "Fear") == "fear"
    assert answer_to_emotion(MIS, "no") is None
    assert answer_to_emotion(BINARY_NO, "yes") == "awe"
    assert answer_to_emotion(BINARY_NO, "no") is None
    with pytest.raises(EmoError):
        answer_to_emotion({"qtype": "rating"}, "awe")


def test_make_reward_funcs():
    funcs, weights = make_reward_funcs({"accuracy": 1, "format": 0.5})
    assert funcs == [accuracy_reward, format_reward] and weights == [1.0, 0.5]
    funcs, weights = make_reward_funcs()
    assert [f.__name__ for f in funcs] == [f"{k}_reward" for k in DEFAULT_REWARD_WEIGHTS]
    assert weights == list(DEFAULT_REWARD_WEIGHTS.values())
    with pytest.raises(EmoError, match="unknown reward"):
        make_reward_funcs({"accuracy": 1.0, "lenght": 1.0})
    with pytest.raises(EmoError, match="must be a number"):
        make_reward_funcs({"accuracy": "high"})
    with pytest.raises(EmoError, match="finite"):
        make_reward_funcs({"accuracy": float("nan")})
    with pytest.raises(EmoError):
        make_reward_funcs({})
    # every function accepts TRL's full keyword set and returns one float per completion (None: not applicable)
    rows = [BINARY_YES, MC, MIS]
    completions = [conv("<answer>yes</answer>"), conv("<answer>g</answer>"), conv("oops")]
    for f in make_reward_funcs({"accuracy": 1, "format": 1, "polarity": 1})[0]:
        out = call(f, completions, rows, image=[None] * 3, image_id=["a", "b", "c"], split=["train"] * 3,
                   instruction_format=["answer_tags"] * 3)
        assert len(out) == 3 and all(isinstance(v, float) for v in out[f.__name__ == "polarity_reward":])
