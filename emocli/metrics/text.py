"""Text generation metrics: captioning scores (COCO toolkit), sacreBLEU, dialogue BLEU and Dist-n.

Three families, each named by its convention because their numbers are not comparable with one another:

- `coco_caption_scores`: the COCO caption toolkit (`pycocoevalcap` 1.2) that captioning and explanation papers
  (NLX-GPT, SEVLM) report: Stanford PTB tokenizer (lower-cased, punctuation dropped), then BLEU-1..4 (corpus
  level, "closest" reference length), METEOR 1.5, ROUGE-L (beta 1.2) and CIDEr-D (n=4, sigma=6, IDF from the
  evaluated references). The tokenizer and METEOR run Java (>= 8). SPICE is not computed: its first use
  downloads Stanford CoreNLP 3.6.0 (~385 MB), which offline machines cannot do; the result says so.
- `sacrebleu_score`: corpus BLEU from sacreBLEU (13a tokenizer, exp smoothing), 0-100. Reproducible,
  not comparable with the COCO BLEU-4 (different tokenizer and smoothing) although equal on simple text.
- `dialogue_bleu` and `distinct_n`: the empathetic-dialogue convention (CEM/CASE lineage): nltk
  `sentence_bleu` per response with cumulative weights (1), (1/2,1/2), (1/3,1/3,1/3), (1/4,...), averaged over
  responses, and corpus-level Dist-n (distinct n-grams / all n-grams over every response). Tokens come from
  `word_tokens`: lower-cased nltk `NLTKWordTokenizer` applied per sentence. The papers call
  `nltk.word_tokenize`, which also splits sentences with the Punkt model (a data download); we split
  sentences on `.!?` followed by white space instead, which gives the same tokens on ordinary text.
  EmpathDiffuser's own script uses white-space tokens and smoothing method4 (`tokenizer="whitespace"`,
  `smoothing="method4"`).

Every function takes plain Python strings; scores are floats in [0, 1] except sacreBLEU (0-100), CIDEr (0-10)
and Dist-n (a ratio in [0, 1]). Importing this module imports nothing heavy (the scorers load on first use).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence

from emocli.errors import EmoError

SPICE_SKIPPED = "SPICE not computed: pycocoevalcap downloads Stanford CoreNLP 3.6.0 (~385 MB) on first use"
COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def java_available() -> bool:
    return shutil.which("java") is not None


def _require_java(what: str) -> None:
    if not java_available():
        raise EmoError(f"{what} needs Java (the `java` command, version 8 or later), which is not on PATH; "
                       "install a JRE (e.g. openjdk-17-jre-headless) or switch METEOR and the PTB tokenizer off")


def _check_pairs(hypotheses: Mapping, references: Mapping) -> None:
    if set(hypotheses) != set(references):
        missing = sorted(map(str, set(hypotheses) ^ set(references)))[:3]
        raise EmoError(f"hypotheses and references must cover the same ids; differing ids: {missing}")
    if not hypotheses:
        raise EmoError("no hypotheses to score")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise EmoError(f"id {empty[0]!r} has no reference text; every scored item needs at least one")


def ptb_tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The COCO toolkit's tokenizer: Stanford PTBTokenizer, lower-cased, punctuation tokens removed."""
    _require_java("The PTB tokenizer")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = list(texts)
    # the wrapper wants {id: [{"caption": str}]}; string ids keep its grouping unambiguous
    wrapped = {str(i): [{"caption": t} for t in texts[k]] for i, k in enumerate(keys)}
    tokenized = PTBTokenizer().tokenize(wrapped)
    return {k: tokenized.get(str(i), [""] * len(texts[k])) for i, k in enumerate(keys)}


def _simple_tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Java-free fallback: lower-case, keep word characters and apostrophes (close to PTB without punctuation)."""
    return {k: [" ".join(re.findall(r"[\w']+", t.lower())) for t in v] for k, v in texts.items()}


def coco_caption_scores(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                        meteor: bool = True, ptb: bool = True) -> dict[str, float]:
    """COCO caption metrics over a corpus: {id: generated text} against {id: [reference texts]}.

    Returns BLEU-1..4, ROUGE-L, CIDEr and (with `meteor`) METEOR, all as floats (BLEU/METEOR/ROUGE in [0, 1]).
    `ptb=False` replaces the Java PTB tokenizer by a lower-cased word split (scores then differ slightly from
    the papers'). SPICE is never computed (see `SPICE_SKIPPED`).
    """
    _check_pairs(hypotheses, references)
    if meteor:
        _require_java("METEOR")
    keys = list(hypotheses)
    tokenize = ptb_tokenize if ptb else _simple_tokenize
    res = tokenize({k: [hypotheses[k]] for k in keys})
    gts = tokenize({k: list(references[k]) for k in keys})

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"BLEU-{n}"] = float(value)
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            scores["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            # close the JVM now instead of whenever the object is collected
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


def sacrebleu_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) from sacreBLEU with its defaults (13a tokenizer, exp smoothing).

    `references[i]` holds every reference of hypothesis i; items may have different numbers of references.
    """
    if len(hypotheses) != len(references):
        raise EmoError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise EmoError("no hypotheses to score")
    import sacrebleu

    width = max(len(r) for r in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_tokens(text: str) -> list[str]:
    """Lower-cased nltk word tokens without the Punkt data download (see the module docstring)."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [tok for sentence in _SENTENCE_END.split(text.lower().strip()) if sentence
            for tok in tokenizer.tokenize(sentence)]


def _tokens(text: str, tokenizer: str) -> list[str]:
    if tokenizer == "nltk":
        return word_tokens(text)
    if tokenizer == "whitespace":
        return text.split()
    raise EmoError(f"unknown tokenizer {tokenizer!r}; allowed: nltk, whitespace")


def dialogue_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *,
                  tokenizer: str = "nltk", smoothing: str = "method1") -> dict[str, float]:
    """Sentence-level nltk BLEU-1..4 (cumulative weights) averaged over responses, in [0, 1].

    `smoothing` names an nltk `SmoothingFunction` method (method0 = none, method1 = epsilon 0.1 on empty
    n-gram counts, method4 as in EmpathDiffuser).
    """
    if len(hypotheses) != len(references):
        raise EmoError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise EmoError("no hypotheses to score")
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoother = getattr(SmoothingFunction(), smoothing, None)
    if smoother is None or not smoothing.startswith("method"):
        raise EmoError(f"unknown smoothing {smoothing!r}; allowed: method0 ... method7")
    weights = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25, 0.25, 0.25, 0.25)}
    totals = dict.fromkeys(weights, 0.0)
    for hyp, refs in zip(hypotheses, references):
        hyp_tokens = _tokens(hyp, tokenizer)
        ref_tokens = [_tokens(r, tokenizer) for r in refs]
        for n, w in weights.items():
            totals[n] += sentence_bleu(ref_tokens, hyp_tokens, weights=w, smoothing_function=smoother)
    return {f"BLEU-{n}": total / len(hypotheses) for n, total in totals.items()}


def distinct_n(texts: Sequence[str], n: int, *, tokenizer: str = "nltk") -> float:
    """Dist-n over a corpus: distinct n-grams / all n-grams across every text (0 when there are none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = _tokens(text, tokenizer)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0
