"""Valence-arousal-dominance (VAD) per token: a lexicon file at a user-given path, lemmas from simplemma.

The lexicon is NRC-VAD (Mohammad 2018) or any file in its text layout: one `word<TAB>valence<TAB>arousal<TAB>
dominance` per line, an optional header line. NRC-VAD may not be redistributed, so `emo` never ships it;
tests use the synthetic lexicon of `emo data synth artemis`. Values in [0, 1] (NRC-VAD v1) are rescaled to
[-1, 1], the "BipolarScale" the SEVLM code reads; files already in [-1, 1] (v2.1) are kept as they are.

Each vocabulary token gets one VAD vector, looked up once when the model is built (and saved with it, so
inference needs no lexicon): the token text (GPT-2's leading space removed, lower-cased) if it is in the
lexicon, else its simplemma lemma, else (0, 0, 0). Special tokens and sub-word pieces that are not words get
(0, 0, 0). Differences from the SEVLM code: it POS-tagged the whole sentence with NLTK and lemmatised with
WordNet (both need NLTK data downloads) and looked up the lemma only; here the lemma is context-free
(simplemma, offline, MIT) and the surface form is tried first.
"""

from __future__ import annotations

from pathlib import Path

from emocli.errors import EmoError

FORMAT = "word<TAB>valence<TAB>arousal<TAB>dominance per line (the NRC-VAD text layout), numbers in [0, 1] or [-1, 1]"


def read_lexicon(path) -> dict[str, tuple[float, float, float]]:
    """{word: (v, a, d)} in [-1, 1]; a file in any other layout is a one-line error naming the line."""
    path = Path(path)
    if not path.is_file():
        from emocli.preflight import how_to_make

        made = how_to_make(path)  # the synthetic lexicon of `emo data synth artemis`
        raise EmoError(f"VAD lexicon {path} does not exist" + (made or "; point model.vad_lexicon at NRC-VAD's "
                       "NRC-VAD-Lexicon.txt (or turn model.vad_fusion and model.vad_head off)"))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise EmoError(f"VAD lexicon {path} is not UTF-8 text; expected {FORMAT}") from None
    entries: dict[str, tuple[float, float, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        try:
            if len(fields) != 4:
                raise ValueError
            values = tuple(float(x) for x in fields[1:])
        except ValueError:
            if number == 1 and len(fields) == 4:  # a header line
                continue
            raise EmoError(f"VAD lexicon {path} line {number} is {line[:60]!r}; expected {FORMAT}") from None
        entries[fields[0].strip().lower()] = values
    if not entries:
        raise EmoError(f"VAD lexicon {path} has no entries; expected {FORMAT}")
    low = min(min(v) for v in entries.values())
    high = max(max(v) for v in entries.values())
    if low < -1 or high > 1:
        raise EmoError(f"VAD lexicon {path} has values in [{low}, {high}]; expected {FORMAT}")
    if low >= 0:  # NRC-VAD v1 scale [0, 1] -> the bipolar [-1, 1] scale SEVLM used
        entries = {w: tuple(2 * x - 1 for x in v) for w, v in entries.items()}
    return entries


def token_vad_table(tokenizer, lexicon: dict[str, tuple[float, float, float]], rows: int | None = None):
    """A float tensor (rows, default the vocabulary size, x 3): the VAD vector of every token id (see the
    module docstring); rows past the tokenizer's vocabulary stay zero."""
    import simplemma
    import torch

    table = torch.zeros(max(rows or 0, len(tokenizer)), 3)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        word = tokenizer.decode([token_id]).strip().lower()
        if not word.isalpha():
            continue
        values = lexicon.get(word)
        if values is None:
            values = lexicon.get(simplemma.lemmatize(word, lang="en"))
        if values is not None:
            table[token_id] = torch.tensor(values)
    return table
