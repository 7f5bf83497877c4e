"""Blind (text-only) baselines: every policy is at chance on the built questions, and the report has them."""

from __future__ import annotations

import pytest

from emocli.emotions import EMOSET
from emocli.methods.grpo.blind import POLICIES, blind_replies
from emocli.methods.grpo.evaluate import blind_scores, polarity_types, score
from emocli.methods.grpo.questions import build_questions

CHANCE = {"binary": 0.5, "multiple_choice": 1 / 8, "misleading": 1 / 8}


def _records(counts) -> list[dict]:
    return [{"id": f"{e}_{k:04d}", "emotion": e, "image": f"/x/{e}_{k:04d}.jpg"}
            for e, n in zip(EMOSET.labels, counts) for k in range(n)]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_blind_policy_is_at_chance_on_built_questions(seed):
    qs = build_questions({"test": _records([60] * 8)}, seed=seed)["test"]
    assert polarity_types(qs) == ("multiple_choice", "misleading")
    for policy in POLICIES:
        m = score(qs, blind_replies(qs, policy, seed=seed))
        assert m["format"] == 1.0  # the replies are well formed: only the content is blind
        for qtype, chance in CHANCE.items():  # 480 questions per type: 3.5 standard errors at most
            assert m["accuracy"][qtype] == pytest.approx(chance, abs=0.08 if qtype == "binary" else 0.05), \
                (policy, qtype)
        assert m["polarity"] == pytest.approx(0.5, abs=0.08), policy


def test_binary_class_prior_is_at_chance_with_imbalanced_classes():
    # "yes iff the named emotion is frequent" reached 0.59 when "no" names were uniform over the others
    qs = build_questions({"test": _records([90, 30, 60, 70, 20, 25, 50, 55])}, seed=0)["test"]
    m = score(qs, blind_replies(qs, "class_prior"))
    assert m["accuracy"]["binary"] == pytest.approx(0.5, abs=0.01)  # exact by construction (+-1 per emotion)
    assert m["accuracy"]["misleading"] == pytest.approx(90 / 400, abs=0.01)  # the majority rate, nothing more


def test_leaky_misleading_questions_leave_the_polarity_metric():
    qs = build_questions({"test": _records([20] * 8)}, types=("multiple_choice", "misleading"), seed=0)["test"]
    for q in qs:  # the old design: wrong suggestions of the true polarity only
        if q["qtype"] == "misleading" and q["candidate"] != q["emotion"]:
            q["candidate"] = next(e for e in EMOSET.labels if e != q["emotion"]
                                  and EMOSET.polarity(e) == EMOSET.polarity(q["emotion"]))
    assert polarity_types(qs) == ("multiple_choice",)
    m = score(qs, blind_replies(qs, "polarity"))
    assert m["polarity_types"] == ["multiple_choice"]
    assert m["polarity"] == pytest.approx(0.5, abs=0.15)  # random letters: no misleading 100% leaks in
    blind = blind_scores(qs)
    assert set(blind) == set(POLICIES) and blind["echo"]["accuracy"]["misleading"] == pytest.approx(1 / 8, abs=0.02)
