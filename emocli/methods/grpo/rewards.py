"""TRL GRPOTrainer reward functions for the emotion questions of `emocli.methods.grpo.questions`.

Contract (TRL 1.16 `GRPOTrainer._calculate_rewards`): each function is called with keyword arguments
``prompts``, ``completions``, ``completion_ids``, ``trainer_state``, ``log_extra``, ``log_metric`` and every
dataset column except ``prompt`` (here ``answer``, ``qtype``, ``emotion``, ``candidate``, ``options``,
``instruction_format``, ...), each a list with one entry per completion, and returns one float (or None =
not applicable) per completion. Completions are conversational, ``[{"role": "assistant", "content": str}]``,
or plain strings; both are accepted.

Scoring
-------
parse_answer      the content of the last <answer>...</answer>, stripped and lower-cased; None when there is
                  no closed answer tag, the last one is empty or contains another answer tag (nested).
accuracy_reward   1.0 / 0.0. binary: "yes"/"no" equal to the gold. multiple_choice: the gold letter ("b",
                  "(b)", "b.") or the true emotion name, or both ("b. fear": both must be right).
                  misleading: the true emotion name (answering the suggested emotion, or only "no", is wrong).
                  A trailing period and surrounding quotes are ignored.
format_reward     1.0 when the completion is exactly an optional <think>...</think> then <answer>...</answer>
                  (non-empty answer) with only whitespace around; 0.0 otherwise. Rows whose
                  ``instruction_format`` is "think_answer" also require the <think> block.
polarity_reward   1.0 for the right emotion, 0.5 for a wrong emotion of the same polarity (positive /
                  negative), 0.0 otherwise, for unparseable answers and, for misleading questions, for
                  accepting the misleading suggestion; None (not applicable) for binary questions, so its
                  logged mean is over the questions it applies to.

`make_reward_funcs({"accuracy": 1.0, "format": 0.25, ...})` returns (functions, weights) for
``GRPOTrainer(reward_funcs=functions, args=GRPOConfig(reward_weights=weights))``. The functions are module
level, so `trl grpo` can also name them by dotted path (``emocli.methods.grpo.rewards.accuracy_reward``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from emocli.emotions import EMOSET
from emocli.errors import EmoError, close_matches

LETTERS = "abcdefgh"
POLARITY_PARTIAL = 0.5
DEFAULT_REWARD_WEIGHTS = {"accuracy": 1.0, "format": 0.25, "polarity": 0.25}

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_TAG_RE = re.compile(r"</?answer>", re.IGNORECASE)
_TAG = r"</?(?:think|answer)>"
_FREE = rf"(?:(?!{_TAG}).)*"  # text without any think/answer tag
_FORMAT_RE = re.compile(rf"\s*(?:<think>{_FREE}</think>\s*)?<answer>{_FREE}</answer>\s*", re.DOTALL)
_THINK_FORMAT_RE = re.compile(rf"\s*<think>{_FREE}</think>\s*<answer>{_FREE}</answer>\s*", re.DOTALL)
_LETTER_RE = re.compile(r"\(?([a-h])\)?[.:]?")
_LETTER_NAME_RE = re.compile(r"\(?([a-h])\s*[).:\-]\s*([a-z]+)")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------
def completion_text(completion) -> str:
    """The text of one completion: a string, a message dict, or a list of messages (conversational).
    Message content may be a string or a list of {"type": "text", "text": ...} parts; a reasoning field
    split off by a response parser (reasoning_content / thinking / reasoning) is put back as <think>...</think>."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence):
        raise EmoError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")
    texts = []
    for message in completion:
        if isinstance(message, str):
            texts.append(message)
            continue
        if not isinstance(message, Mapping):
            raise EmoError(f"a completion message must be a dict, got {type(message).__name__}")
        if message.get("role", "assistant") != "assistant":
            continue
        text = _content_text(message.get("content"))
        reasoning = next((message[f] for f in _REASONING_FIELDS if isinstance(message.get(f), str)), None)
        if reasoning and "<think>" not in text:
            text = f"<think>{reasoning}</think>{text}"
        texts.append(text)
    return "".join(texts)


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text") or "" for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


def parse_answer(text) -> str | None:
    """Content of the last <answer>...</answer> (tags case-insensitive), stripped and lower-cased; None when
    missing, unclosed, empty, or when the last answer holds another answer tag (nested)."""
    text = completion_text(text)
    matches = _ANSWER_RE.findall(text)
    if not matches:
        return None
    content = matches[-1]
    if _ANSWER_TAG_RE.search(content):
        return None
    content = content.strip().lower()
    return content or None


def _clean(answer: str | None) -> str | None:
    """An answer compared to gold labels: whitespace collapsed, surrounding quotes/backticks and a trailing
    period or exclamation mark dropped."""
    if answer is None:
        return None
    out = " ".join(answer.split()).strip("\"'`*").strip()
    out = out.rstrip(".!").strip()
    return out or None


def _choice(answer: str | None, options: Sequence[str] | None = None) -> tuple[str | None, str | None]:
    """(letter, emotion) named by a multiple-choice answer: "b", "(b)", "b.", "fear", "b. fear", "(b) fear".
    Either part may be None; an answer that is neither gives (None, None)."""
    answer = _clean(answer)
    if answer is None:
        return None, None
    if answer in EMOSET.labels:
        return None, answer
    m = _LETTER_RE.fullmatch(answer)
    if m:
        return m.group(1), None
    m = _LETTER_NAME_RE.fullmatch(answer)
    if m and m.group(2) in EMOSET.labels:
        return m.group(1), m.group(2)
    return None, None


def answer_to_emotion(example: Mapping, text) -> str | None:
    """The emotion an answer names, for evaluation: `text` is a parsed answer or a raw completion (parsed
    first when it holds an <answer> tag). multiple_choice: a letter maps through the example's ``options``
    (the A..H order), a name is taken as is, "b. fear" needs letter and name to agree; misleading: the
    emotion name; binary: "yes" -> the emotion asked about (``candidate``), anything else -> None.
    None when nothing valid is named."""
    raw = completion_text(text)
    answer = parse_answer(raw) if "<answer" in raw.lower() else _clean(raw.strip().lower())
    answer = _clean(answer)
    if answer is None:
        return None
    qtype = example.get("qtype")
    if qtype == "multiple_choice":
        options = list(example.get("options") or [])
        letter, name = _choice(answer, options)
        from_letter = None
        if letter is not None:
            index = LETTERS.index(letter)
            if index < len(options):
                from_letter = options[index]
            elif not options and letter == str(example.get("answer", "")).strip().lower():
                from_letter = example.get("emotion")  # no option order at hand: only the gold letter maps
            else:
                return None
        if from_letter is not None and name is not None and from_letter != name:
            return None
        return from_letter or name
    if qtype == "misleading":
        return answer if answer in EMOSET.labels else None
    if qtype == "binary":
        candidate = example.get("candidate")
        return candidate if answer == "yes" and candidate in EMOSET.labels else None
    raise EmoError(f"unknown question type {qtype!r}; valid: binary, multiple_choice, misleading")


# ---------------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------------
def accuracy_reward(completions, **kwargs) -> list[float]:
    """1.0 for a correct answer, else 0.0 (rules in the module docstring). Needs columns answer, qtype, emotion."""
    cols = _columns("accuracy_reward", completions, kwargs, ("answer", "qtype", "emotion"))
    out = []
    for i, completion in enumerate(completions):
        out.append(1.0 if _correct(parse_answer(completion), _row(cols, i)) else 0.0)
    return out


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion is exactly [<think>...</think>] <answer>non-empty</answer>, whitespace aside;
    the <think> block is required for rows with instruction_format == "think_answer"."""
    formats = kwargs.get("instruction_format")
    if formats is not None and len(formats) != len(completions):
        raise EmoError(f"format_reward: {len(completions)} completions but {len(formats)} instruction_format values")
    out = []
    for i, completion in enumerate(completions):
        text = completion_text(completion)
        pattern = _THINK_FORMAT_RE if formats is not None and formats[i] == "think_answer" else _FORMAT_RE
        ok = pattern.fullmatch(text) is not None and parse_answer(text) is not None
        out.append(1.0 if ok else 0.0)
    return out


def polarity_reward(completions, **kwargs) -> list[float | None]:
    """1.0 for the right emotion, POLARITY_PARTIAL for a wrong one of the same polarity, else 0.0; 0.0 for
    unparseable answers and accepted misleading suggestions; None for binary questions (not applicable)."""
    return _polarity(completions, kwargs, POLARITY_PARTIAL)


def make_polarity_reward(partial: float = POLARITY_PARTIAL):
    """A polarity reward with another partial credit for a same-polarity wrong emotion."""
    partial = _number("partial", partial)

    def polarity_reward(completions, **kwargs) -> list[float]:  # same name, so TRL logs it the same way
        return _polarity(completions, kwargs, partial)

    polarity_reward.__doc__ = f"polarity_reward with partial credit {partial:g}"
    return polarity_reward


REWARD_FUNCS = {"accuracy": accuracy_reward, "format": format_reward, "polarity": polarity_reward}


def make_reward_funcs(weights: Mapping[str, float] | None = None) -> tuple[list, list[float]]:
    """(reward functions, weights) in the order of `weights` (default DEFAULT_REWARD_WEIGHTS), for
    GRPOTrainer(reward_funcs=...) and GRPOConfig(reward_weights=...). Keys: accuracy, format, polarity."""
    weights = DEFAULT_REWARD_WEIGHTS if weights is None else weights
    if not isinstance(weights, Mapping) or not weights:
        raise EmoError(f"reward weights must be a non-empty mapping like {DEFAULT_REWARD_WEIGHTS}, got {weights!r}")
    funcs, values = [], []
    for name, weight in weights.items():
        if name not in REWARD_FUNCS:
            raise EmoError(f"unknown reward {name!r}{close_matches(str(name), REWARD_FUNCS)}; "
                           f"valid: {', '.join(REWARD_FUNCS)}")
        funcs.append(REWARD_FUNCS[name])
        values.append(_number(f"weight of {name!r}", weight))
    return funcs, values


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def _number(what: str, value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise EmoError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise EmoError(f"{what} must be finite, got {value!r}")
    return out


def _columns(name: str, completions, kwargs: Mapping, required: Sequence[str]) -> dict[str, list]:
    if not isinstance(completions, Sequence) or isinstance(completions, str):
        raise EmoError(f"{name}: completions must be a list, got {type(completions).__name__}")
    missing = [c for c in required if kwargs.get(c) is None]
    if missing:
        raise EmoError(f"{name} needs the dataset columns {', '.join(required)}; missing: {', '.join(missing)} "
                       "(build the dataset with emocli.methods.grpo.questions)")
    cols = {}
    for key in dict.fromkeys((*required, "answer", "options", "candidate")):
        values = kwargs.get(key)
        if values is None:
            continue
        if len(values) != len(completions):
            raise EmoError(f"{name}: {len(completions)} completions but {len(values)} values of {key!r}")
        cols[key] = list(values)
    return cols


def _row(cols: Mapping[str, list], i: int) -> dict:
    return {key: values[i] for key, values in cols.items()}


def _correct(answer: str | None, row: Mapping) -> bool:
    answer = _clean(answer)
    if answer is None:
        return False
    qtype = row["qtype"]
    gold = str(row["answer"]).strip().lower()
    emotion = str(row["emotion"]).strip().lower()
    if qtype == "binary":
        return answer == gold
    if qtype == "multiple_choice":
        letter, name = _choice(answer, row.get("options"))
        if letter is None and name is None:
            return False
        return (letter is None or letter == gold) and (name is None or name == emotion)
    if qtype == "misleading":
        return answer == emotion
    raise EmoError(f"unknown question type {qtype!r}; valid: binary, multiple_choice, misleading")


def _polarity(completions, kwargs: Mapping, partial: float) -> list[float | None]:
    cols = _columns("polarity_reward", completions, kwargs, ("qtype", "emotion"))
    out = []
    for i, completion in enumerate(completions):
        row = _row(cols, i)
        if row["qtype"] == "binary":
            out.append(None)  # not applicable: TRL leaves it out of the logged mean and of the weighted sum
            continue
        predicted = answer_to_emotion(row, parse_answer(completion) or "")
        emotion = str(row["emotion"]).strip().lower()
        if predicted is None:
            out.append(0.0)
        elif predicted == emotion:
            out.append(1.0)
        elif row["qtype"] == "misleading" and predicted == row.get("candidate"):
            out.append(0.0)
        elif emotion in EMOSET.labels and EMOSET.polarity(predicted) == EMOSET.polarity(emotion):
            out.append(partial)
        else:
            out.append(0.0)
    return out
