"""Blind baselines: text-only policies that answer the understanding questions without the image.

Each policy reads only what the question's text gives (the question type, the emotion it names, the option
order) and replies "<answer>...</answer>", so its replies are scored with the same rewards and metrics as a
model's (`evaluate.score`). A model is only seen to use the image where it beats every one of them.

echo         binary "yes"; multiple choice the first option (A); misleading: accept the suggestion.
polarity     binary "yes" iff the named emotion is positive; multiple choice a seeded random letter;
             misleading: a seeded random other emotion of the suggestion's polarity.
class_prior  the most frequent emotion of the evaluated questions (a prior at least as good as one from the
             training split): binary "yes" iff the named emotion is among the four most frequent; multiple
             choice the letter of the most frequent emotion; misleading the most frequent emotion.
constant     binary "no"; multiple choice "A"; misleading the first EmoSet emotion.

On questions built by `emocli.methods.grpo.questions` from class-balanced images every policy is at chance
(binary 1/2, multiple choice and misleading 1/8).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from emocli.emotions import EMOSET
from emocli.errors import EmoError, close_matches

POLICIES = ("echo", "polarity", "class_prior", "constant")
LETTERS = "ABCDEFGH"


def blind_replies(examples: Sequence[dict], policy: str, seed: int = 0) -> list[str]:
    """The replies of a text-only `policy` to `examples`, in order."""
    if policy not in POLICIES:
        raise EmoError(f"unknown blind policy {policy!r}{close_matches(policy, POLICIES)}; valid: {', '.join(POLICIES)}")
    counts = Counter(e.get("emotion") for e in examples if e.get("emotion") in EMOSET.labels)
    ranked = sorted(EMOSET.labels, key=lambda e: (-counts[e], EMOSET.index(e)))
    out = []
    for e in examples:
        rng = random.Random(f"{seed}:blind:{policy}:{e.get('image_id')}:{e.get('qtype')}")
        out.append(f"<answer>{_answer(e, policy, ranked, rng)}</answer>")
    return out


def _answer(example: dict, policy: str, ranked: list[str], rng: random.Random) -> str:
    qtype, named = example.get("qtype"), example.get("candidate")
    options = list(example.get("options") or [])
    if qtype == "binary":
        if policy == "echo":
            return "yes"
        if policy == "polarity":
            return "yes" if named in EMOSET.labels and EMOSET.polarity(named) == "positive" else "no"
        if policy == "class_prior":
            return "yes" if named in ranked[:4] else "no"
        return "no"
    if qtype == "multiple_choice":
        if policy == "polarity":
            return rng.choice(LETTERS[:len(options) or 8])
        if policy == "class_prior" and ranked[0] in options:
            return LETTERS[options.index(ranked[0])]
        return "A"
    if qtype == "misleading":
        if policy == "echo":
            return str(named)
        if policy == "polarity" and named in EMOSET.labels:
            pol = EMOSET.polarity(named)
            return rng.choice([x for x in EMOSET.labels if x != named and EMOSET.polarity(x) == pol])
        if policy == "class_prior":
            return ranked[0]
        return EMOSET.labels[0]
    raise EmoError(f"unknown question type {qtype!r}; valid: binary, multiple_choice, misleading")
