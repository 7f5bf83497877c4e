"""Blind (text-only) baselines on GRPO understanding questions: what a policy scores without the image.

    python benchmarks/grpo_blind.py                      # questions built by this checkout
    python benchmarks/grpo_blind.py --questions q.jsonl  # a saved questions file (e.g. built by older code)

Without --questions, the questions are built from illustrative EmoSet-like class counts (imbalanced, 4,400
images) with the default settings; --write saves them, so another checkout's questions can be compared.
"""

from __future__ import annotations

import argparse
import json

from emocli.emotions import EMOSET

# illustrative imbalance (amusement most frequent, anger least), 4,400 images
COUNTS = (800, 500, 600, 650, 300, 350, 550, 650)


def records() -> list[dict]:
    return [{"id": f"{e}_{k:05d}", "emotion": e, "image": f"/x/{e}_{k:05d}.jpg"}
            for e, n in zip(EMOSET.labels, COUNTS) for k in range(n)]


def main() -> None:
    from emocli.methods.grpo.blind import blind_replies
    from emocli.methods.grpo.evaluate import blind_scores, read_questions
    from emocli.methods.grpo.questions import build_questions
    from emocli.methods.grpo.rewards import answer_to_emotion

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", help="a questions JSONL to score instead of building them")
    parser.add_argument("--write", help="save the built questions here (JSONL)")
    args = parser.parse_args()
    qs = read_questions(args.questions) if args.questions else build_questions({"test": records()}, seed=0)["test"]
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(q) + "\n" for q in qs)
    mis = [q for q in qs if q["qtype"] == "misleading"]
    agree = sum(EMOSET.polarity(q["candidate"]) == EMOSET.polarity(q["emotion"]) for q in mis) / len(mis)
    print(f"{len(qs)} questions; misleading suggestion has the true polarity in {agree:.3f}")
    print("| policy | binary | multiple choice | misleading | polarity (misleading) |")
    print("|---|---|---|---|---|")
    for policy, m in blind_scores(qs).items():
        acc = m["accuracy"]
        # polarity of the misleading replies, computed directly (the metric leaves leaky questions out)
        named = [answer_to_emotion(q, r) for q, r in zip(mis, blind_replies(mis, policy))]
        pol = sum(n is not None and EMOSET.polarity(n) == EMOSET.polarity(q["emotion"])
                  for q, n in zip(mis, named)) / len(mis)
        print(f"| {policy} | {acc['binary']:.3f} | {acc['multiple_choice']:.3f} | {acc['misleading']:.3f} "
              f"| {pol:.3f} |")


if __name__ == "__main__":
    main()
