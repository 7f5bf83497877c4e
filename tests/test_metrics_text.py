"""Text metrics against values worked out by hand on fixed strings (see the comments for each count)."""

from __future__ import annotations

import math

import pytest

from emocli.errors import EmoError
from emocli.metrics import text

needs_java = pytest.mark.skipif(not text.java_available(), reason="the COCO toolkit's PTB tokenizer/METEOR need java")

# Pair A: hypothesis "the cat sat on the mat" against "the cat is on the mat" (both 6 words).
#   1-grams: the x2, cat, on, mat match (sat does not)          -> 5/6
#   2-grams: the cat, on the, the mat match (cat sat, sat on not) -> 3/5
#   3-grams: on the mat matches                                   -> 1/4
#   4-grams: none of 3                                            -> 0/3
# Pair B: hypothesis equal to its reference "the sky is very dark" (5 words): 5/5, 4/4, 3/3, 2/2.
HYP = {"a": "the cat sat on the mat", "b": "the sky is very dark"}
REFS = {"a": ["the cat is on the mat"], "b": ["the sky is very dark"]}
# corpus counts (A + B): 10/11, 7/9, 4/7, 2/5; total length 11 = reference length, so no brevity penalty
CORPUS_BLEU = {
    1: 10 / 11,
    2: (10 / 11 * 7 / 9) ** (1 / 2),
    3: (10 / 11 * 7 / 9 * 4 / 7) ** (1 / 3),
    4: (10 / 11 * 7 / 9 * 4 / 7 * 2 / 5) ** (1 / 4),
}


@needs_java
def test_coco_bleu_rouge_equal_hand_computed():
    scores = text.coco_caption_scores(HYP, REFS, meteor=False)
    for n, expected in CORPUS_BLEU.items():
        assert scores[f"BLEU-{n}"] == pytest.approx(expected, rel=1e-6)
    # ROUGE-L: LCS(A) = "the cat on the mat" = 5, P = R = 5/6 so F_beta = 5/6; B is 1
    assert scores["ROUGE-L"] == pytest.approx((5 / 6 + 1) / 2, rel=1e-9)


def test_coco_bleu_brevity_penalty_without_java():
    # "the sky is dark" (4) against "the sky is very dark" (5): 1-grams 4/4, 2-grams "the sky", "sky is" 2/3
    scores = text.coco_caption_scores({"x": "The sky is dark."}, {"x": ["the sky is very dark"]},
                                      meteor=False, ptb=False)
    bp = math.exp(1 - 5 / 4)
    assert scores["BLEU-1"] == pytest.approx(bp, rel=1e-6)
    assert scores["BLEU-2"] == pytest.approx(bp * math.sqrt(2 / 3), rel=1e-6)


def test_cider_equals_hand_computed():
    # Two images, so IDF = log(2) - log(df): every reference n-gram occurs in one image only (df 1) and
    # unseen n-grams count as df 1 too, so every n-gram weighs w = log 2 and w cancels in the cosines.
    # Image 1: "a b d" vs "a b c": n=1 cosine 2/3, n=2 1/2, n=3 0, n=4 0 (no 4-grams) -> 10 * (7/6)/4
    # Image 2: exact 3-word match: cosines 1, 1, 1, 0                                 -> 10 * 3/4
    # Same bigram counts, so the length penalty is 1.
    scores = text.coco_caption_scores({"1": "a b d", "2": "x y z"}, {"1": ["a b c"], "2": ["x y z"]},
                                      meteor=False, ptb=False)
    expected = (10 * (7 / 6) / 4 + 10 * 3 / 4) / 2
    assert scores["CIDEr"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow  # each METEOR call starts a JVM that loads its paraphrase table (~10-40 s on 2 busy cores)
@needs_java
def test_meteor_orders_and_ptb_drops_punctuation():
    scores_exact = text.coco_caption_scores({"1": "The sky is very dark!"}, {"1": ["the sky is very dark"]})
    scores_other = text.coco_caption_scores({"1": "a bright red apple"}, {"1": ["the sky is very dark"]})
    assert scores_exact["BLEU-4"] == pytest.approx(1.0, rel=1e-6)  # case and "!" removed by the PTB step
    assert scores_exact["METEOR"] > 0.5 > scores_other["METEOR"] == 0.0


def test_sacrebleu_agrees_with_coco_bleu4_on_plain_text():
    # same corpus counts as CORPUS_BLEU, no zero counts so sacreBLEU's smoothing does not apply
    got = text.sacrebleu_score([HYP["a"], HYP["b"]], [REFS["a"], REFS["b"] + ["an extra reference"]])
    assert got == pytest.approx(100 * CORPUS_BLEU[4], rel=1e-9)


def test_dialogue_bleu_method1_equals_hand_computed():
    # sentence A: precisions 5/6, 3/5, 1/4, 0 -> method1 turns 0/3 into 0.1/3; sentence B: all 1
    got = text.dialogue_bleu([HYP["a"], HYP["b"]], [REFS["a"], REFS["b"]])
    expected_a = {1: 5 / 6, 2: (5 / 6 * 3 / 5) ** (1 / 2), 3: (5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3),
                  4: (5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** (1 / 4)}
    for n, value in expected_a.items():
        assert got[f"BLEU-{n}"] == pytest.approx((value + 1.0) / 2, rel=1e-9)


def test_word_tokens_match_nltk_word_tokenize_conventions():
    assert text.word_tokens("I don't know. It's sad, really!") == [
        "i", "do", "n't", "know", ".", "it", "'s", "sad", ",", "really", "!"]


def test_distinct_n_counts():
    texts = ["the cat sat", "the cat ran"]
    # 1-grams: the, cat, sat, the, cat, ran -> 4 distinct of 6; 2-grams: the cat x2, cat sat, cat ran -> 3/4
    assert text.distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert text.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert text.distinct_n(["one"], 2) == 0.0


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(EmoError, match="same ids"):
        text.coco_caption_scores({"1": "a"}, {"2": ["a"]}, meteor=False, ptb=False)
    with pytest.raises(EmoError, match="no reference"):
        text.coco_caption_scores({"1": "a"}, {"1": []}, meteor=False, ptb=False)
    with pytest.raises(EmoError, match="unknown tokenizer"):
        text.distinct_n(["a"], 1, tokenizer="spacy")
    with pytest.raises(EmoError, match="unknown smoothing"):
        text.dialogue_bleu(["a"], [["a"]], smoothing="laplace")
