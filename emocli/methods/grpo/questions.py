"""Image-disjoint splits and GRPO question datasets for emotion understanding (EmoSet, 8 emotions).

Input: canonical EmoSet records (`emocli.data.emoset.EmoSetRelease.records`), dicts with at least
``id``, ``emotion`` (one of the 8 EMOSET labels), ``image`` (a path) and usually ``split``.

`split_images` assigns every image to exactly one of train / val / test. `build_questions` turns each
image of each split into one question per question type. Every example is a dict in TRL 1.16
GRPOTrainer's conversational vision-language format:

    prompt              [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}]
                        (a {"role": "system", "content": [{"type": "text", ...}]} turn first when
                        `system_prompt` is given). One image placeholder, no image payload: the trainer
                        fills the placeholder from the ``image`` column (`trl.data_utils.prepare_multimodal_messages`)
                        and applies the processor's chat template itself.
    image               the image path (str). `to_dataset` casts this column to `datasets.Image(mode="RGB")`, so
                        rows decode lazily to RGB PIL images, which is what the trainer passes to the processor.
    answer              gold answer string: "yes" / "no" (binary), a letter "A".."H" (multiple_choice),
                        an emotion name (misleading).
    qtype               "binary" | "multiple_choice" | "misleading"
    emotion             the image's true emotion
    image_id            the record's id
    split               "train" | "val" | "test"
    candidate           the emotion named in the question (binary: the emotion asked about; misleading: the
                        suggested wrong emotion); None for multiple_choice
    options             multiple_choice: the 8 emotions in the order they are lettered A..H; [] otherwise
    instruction_format  "answer_tags" | "think_answer"

Every column but ``prompt`` reaches the reward functions as a keyword argument (list, one value per
completion), see `emocli.methods.grpo.rewards`.

Question types
--------------
binary           "Does this image evoke <X>? Answer yes or no."  Within a split, exactly half of the
                 questions (|yes - no| <= 1, also within each emotion) ask about the true emotion (gold "yes");
                 the others ask about a different emotion (gold "no"). The "no" names are drawn from a pool
                 holding each emotion as often as the "yes" questions name it, so every emotion is named in
                 as many "no" as "yes" questions (give or take one): P(yes | named emotion) = 1/2, and "yes iff
                 the named emotion is frequent" is at chance. With a confusion matrix, a "no" name is drawn
                 from the pool weighted by the true emotion's wrong mass (the emotions the base model mixes
                 it up with); without one, uniformly from the pool.
multiple_choice  the 8 emotions as options A..H in a per-question shuffled order; gold = the letter of the
                 true emotion. The gold letters are balanced over a split: every block of 8 questions uses
                 each letter exactly once, so letter counts differ by at most 1.
misleading       "Someone says this image evokes <Y>. Is that right? If it is, answer <Y>; if not, answer
                 with the emotion the image actually evokes." followed by the 8 emotions. The gold answer is
                 always the true emotion name. In a share `right` of the questions (floor or ceil of right x n
                 per split, evenly spread over the emotions) Y is the true emotion, so accepting it is right;
                 otherwise Y is wrong and echoing it is wrong. The suggestion must carry no shortcut: a wrong Y
                 has the true emotion's polarity in a share (1/2 - right) / (1 - right) of the wrong
                 questions (spread like `right`) and the other polarity otherwise, so Y's polarity agrees with
                 the truth in half of all questions, for every emotion: "answer an emotion of the
                 suggestion's polarity" is at chance. With right = 1/8 (the default) and no confusion
                 matrix Y is uniform over the 8 emotions and independent of the answer, so echoing it also
                 scores chance (1/8). With right = 0, "always reject the suggestion" would be rewarded every
                 time (the mirror of the original code's always-"yes" target). Within the chosen polarity a
                 wrong Y comes from the base model's confusion matrix when one is given (`confusion[true][pred]`,
                 counts or probabilities): "proportional" (default) samples among those wrong emotions with
                 probability proportional to their confusion mass, "most_confused" takes the largest (seeded
                 tie-break); a row without such mass, or no confusion at all, gives a random one.

Everything is deterministic given `seed`: per-question draws use a `random.Random` seeded with a string of
(seed, question type, image id); split-level balancing uses (seed, question type[, split]) and does not
depend on the order of the input records.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from emocli.emotions import EMOSET
from emocli.errors import EmoError, close_matches

log = logging.getLogger("emocli")

SPLITS = ("train", "val", "test")
QTYPES = ("binary", "multiple_choice", "misleading")
INSTRUCTION_FORMATS = ("answer_tags", "think_answer")
MISLEADING_PICKS = ("proportional", "most_confused")
# Default share of misleading questions whose suggestion is right (recipe key data.misleading_right).
MISLEADING_RIGHT = 0.125
LETTERS = "ABCDEFGH"
EXAMPLE_KEYS = ("prompt", "image", "answer", "qtype", "emotion", "image_id", "split", "candidate", "options",
                "instruction_format")

_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "dev": "val",
                  "test": "test"}
# held-out splits win when one image appears in several official splits
_SPLIT_PRIORITY = {"test": 2, "val": 1, "train": 0}

_ANSWER_WHAT = {
    "binary": "yes or no",
    "multiple_choice": "only the letter of your choice",
    "misleading": "one emotion name",
}


# ---------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------
def split_images(records: Iterable[Mapping], fractions=(0.8, 0.1, 0.1), seed: int = 0,
                 keep_official: bool = True) -> dict[str, list[dict]]:
    """Assign every image to exactly one split; returns {"train": [...], "val": [...], "test": [...]}.

    An image is identified by its ``id`` and by its ``image`` path: records sharing either are the same
    image, kept once (the first record). Records of one image with different emotions raise EmoError.

    keep_official=True and every record carries a ``split`` (train / val / test; "validation" is read as
    val): the official assignment is kept. An image listed in several official splits goes to the most
    held-out one (test > val > train). An official val or test split that is absent is carved out of the
    official train split, stratified by emotion, with the fractions renormalised (e.g. only train present
    with (0.8, 0.1, 0.1): train is split 80/10/10). Otherwise (keep_official=False, or no record has a
    split) all images are split by `fractions`, stratified by emotion and seeded. Some records with a split
    and some without, under keep_official=True, is an error.

    The returned records are copies with ``split`` set to the assigned split, in input order.
    """
    frac = _check_fractions(fractions)
    images = _unique_images(records)
    has_split = [r.get("split") is not None for _, r, _ in images]
    if keep_official and any(has_split):
        if not all(has_split):
            missing = [key for (key, _, _), has in zip(images, has_split) if not has]
            raise EmoError(f"{len(missing)} of {len(images)} images have no 'split' (e.g. {missing[0]!r}) while "
                           "others do; give every record a split or pass keep_official=False to re-split")
        assignment = _official_assignment(images)
        present = {s for s in assignment.values()}
        missing_splits = [s for s in ("val", "test") if s not in present and frac[s] > 0]
        if missing_splits:
            if "train" not in present:
                raise EmoError(f"the official split has no train images (present: {', '.join(sorted(present))})")
            carve = {s: frac[s] for s in ("train", *missing_splits)}
            total = sum(carve.values())
            carve = {s: f / total for s, f in carve.items()}
            log.info("official split lacks %s: carving %s out of train (stratified, seed %d)",
                     " and ".join(missing_splits), ", ".join(f"{s} {f:.3f}" for s, f in carve.items()), seed)
            train_items = [(key, r["emotion"]) for key, r, _ in images if assignment[key] == "train"]
            assignment.update(_stratified(train_items, carve, seed))
    else:
        assignment = _stratified([(key, r["emotion"]) for key, r, _ in images], frac, seed)

    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for key, record, _ in images:
        split = assignment[key]
        out[split].append(dict(record, split=split))
    return out


def _check_fractions(fractions) -> dict[str, float]:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise EmoError(f"split fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise EmoError(f"split fractions must be three non-negative numbers (train, val, test), got {fractions!r}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise EmoError(f"split fractions must sum to 1, got {fractions!r} (sum {sum(values):g})")
    if values[0] <= 0:
        raise EmoError(f"the train fraction must be positive, got {fractions!r}")
    return dict(zip(SPLITS, values))


def _check_record(record, where: str = "") -> dict:
    if not isinstance(record, Mapping):
        raise EmoError(f"record{where} is not a dict: {record!r}")
    missing = [k for k in ("id", "emotion", "image") if record.get(k) in (None, "")]
    if missing:
        raise EmoError(f"record{where} lacks {', '.join(missing)}: {dict(record)!r}")
    emotion = EMOSET.validate(record["emotion"])
    out = dict(record, id=str(record["id"]), emotion=emotion, image=str(record["image"]))
    split = record.get("split")
    if split is not None:
        name = _SPLIT_ALIASES.get(str(split).strip().lower())
        if name is None:
            raise EmoError(f"record{where} {out['id']!r} has unknown split {split!r}"
                           f"{close_matches(str(split), SPLITS)}; valid: {', '.join(SPLITS)}")
        out["split"] = name
    return out


def _unique_images(records) -> list[tuple[str, dict, set]]:
    """[(key, first record, set of official splits)] in input order; key = the first id seen for the image."""
    alias: dict[tuple[str, str], str] = {}
    order: list[str] = []
    first: dict[str, dict] = {}
    splits: dict[str, set] = {}
    for i, raw in enumerate(records):
        record = _check_record(raw, f" {i}")
        key = alias.get(("id", record["id"])) or alias.get(("path", record["image"])) or record["id"]
        alias.setdefault(("id", record["id"]), key)
        alias.setdefault(("path", record["image"]), key)
        if key not in first:
            order.append(key)
            first[key] = record
            splits[key] = set()
        elif first[key]["emotion"] != record["emotion"]:
            raise EmoError(f"image {key!r} appears with two emotions: {first[key]['emotion']!r} and "
                           f"{record['emotion']!r} (record {i}, id {record['id']!r}, image {record['image']!r})")
        if record.get("split") is not None:
            splits[key].add(record["split"])
    if not order:
        raise EmoError("no records to split")
    return [(key, first[key], splits[key]) for key in order]


def _official_assignment(images) -> dict[str, str]:
    assignment: dict[str, str] = {}
    moved = 0
    for key, _, splits in images:
        best = max(splits, key=_SPLIT_PRIORITY.__getitem__)
        moved += len(splits) > 1
        assignment[key] = best
    if moved:
        log.warning("%d images are listed in more than one official split; each is kept only in its most "
                    "held-out split (test > val > train)", moved)
    return assignment


def _stratified(items: Sequence[tuple[str, str]], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """{key: split} for (key, emotion) items: per emotion, a seeded shuffle cut by largest remainders."""
    names = list(fractions)
    by_emotion: dict[str, list[str]] = {}
    for key, emotion in items:
        by_emotion.setdefault(emotion, []).append(key)
    out: dict[str, str] = {}
    for e_index, emotion in enumerate(EMOSET.labels):
        keys = sorted(by_emotion.get(emotion, []))
        if not keys:
            continue
        random.Random(f"{seed}:split:{emotion}").shuffle(keys)
        counts = _allocate(len(keys), [fractions[s] for s in names], rotate=e_index)
        start = 0
        for split, count in zip(names, counts):
            for key in keys[start:start + count]:
                out[key] = split
            start += count
    return out


def _allocate(n: int, fractions: Sequence[float], rotate: int = 0) -> list[int]:
    """Split n into len(fractions) counts by largest remainders; ties rotate with `rotate` (per emotion)."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    k = len(fractions)
    order = sorted(range(k), key=lambda i: (-(exact[i] - counts[i]), (i - rotate) % k))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


# ---------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------
def build_questions(records_by_split: Mapping[str, Iterable[Mapping]], types: Sequence[str] = QTYPES,
                    seed: int = 0, confusion=None, instruction_format: str = "answer_tags",
                    misleading_pick: str = "proportional", system_prompt: str | None = None,
                    misleading_right: float = MISLEADING_RIGHT) -> dict[str, list[dict]]:
    """One question per image and question type, for each split of `records_by_split` (e.g. the output of
    `split_images`); returns {split: [example, ...]} with, per image, its questions in `types` order.

    confusion: the base model's confusion matrix, {true: {pred: count|prob}} or an 8x8 nested list in EMOSET
    order, for misleading suggestions and binary "no" candidates (within the leak-free constraints of the module
    docstring); None: uniform draws within those constraints. misleading_right: share of misleading questions whose suggestion is right. instruction_format: "answer_tags"
    asks for only <answer>...</answer>, "think_answer" for <think>...</think> then <answer>...</answer>.
    """
    types = _check_types(types)
    _check_instruction_format(instruction_format)
    rows = _confusion_rows(confusion)
    _check_pick(misleading_pick)
    if not isinstance(records_by_split, Mapping):
        raise EmoError("records_by_split must map a split name to its records (see split_images)")
    seen: dict[str, str] = {}
    out: dict[str, list[dict]] = {}
    for split, records in records_by_split.items():
        records = [_check_record(r, f" {i} of split {split!r}") for i, r in enumerate(records)]
        for r in records:
            if seen.setdefault(r["id"], split) != split:
                raise EmoError(f"image {r['id']!r} is in both split {seen[r['id']]!r} and {split!r}; "
                               "use split_images for image-disjoint splits")
        built = {}
        common = dict(seed=seed, instruction_format=instruction_format, split=split, system_prompt=system_prompt)
        if "binary" in types:
            built["binary"] = binary_questions(records, confusion=rows, **common)
        if "multiple_choice" in types:
            built["multiple_choice"] = multiple_choice_questions(records, **common)
        if "misleading" in types:
            built["misleading"] = misleading_questions(records, confusion=rows, pick=misleading_pick,
                                                       right=misleading_right, **common)
        out[split] = [built[t][i] for i in range(len(records)) for t in types]
    return out


def binary_questions(records: Sequence[Mapping], seed: int = 0, instruction_format: str = "answer_tags",
                     split: str | None = None, system_prompt: str | None = None, confusion=None) -> list[dict]:
    """"Does this image evoke X?" for each record, gold "yes" for exactly half of them (|yes - no| <= 1,
    also within each emotion); X for a "no" is drawn from the confusion row's wrong mass when `confusion`
    is given (proportionally), else uniformly from the other seven. Same order as `records`."""
    records = [_check_record(r, f" {i}") for i, r in enumerate(records)]
    _check_instruction_format(instruction_format)
    rows = _confusion_rows(confusion)
    order = _balanced_order(records, f"{seed}:binary:{split}")
    labels = [False] * len(records)
    first_yes = random.Random(f"{seed}:binary:{split}:start").random() < 0.5
    for rank, index in enumerate(order):
        labels[index] = (rank % 2 == 0) == first_yes
    candidates = _no_candidates(records, labels, rows, f"{seed}:binary:{split}")
    out = []
    for i, (record, yes) in enumerate(zip(records, labels)):
        candidate = record["emotion"] if yes else candidates[i]
        text = f"Does this image evoke {candidate}? Answer yes or no."
        out.append(_example(record, "binary", text, "yes" if yes else "no", instruction_format, split,
                            system_prompt, candidate=candidate))
    return out


def _no_candidates(records: Sequence[dict], labels: Sequence[bool], rows: dict | None, key: str) -> dict[int, str]:
    """{index: named emotion} for the "no" questions, so that every emotion is named as often in a "no" as in a
    "yes" question (give or take one): the named emotion alone says nothing about the answer.

    The names form a pool with the "yes" counts per emotion; questions whose true emotion has a confusion
    row take theirs first (weighted by the row within the pool), the others draw uniformly from the pool
    (weighted by what is left). A question left with only its own emotion swaps with an earlier one."""
    yes_counts = Counter(r["emotion"] for r, y in zip(records, labels) if y)
    no_index = [i for i, y in enumerate(labels) if not y]
    pool = Counter(yes_counts)
    # one more or one fewer "no" than "yes": the most frequent emotion gives or takes the difference
    diff = len(no_index) - sum(pool.values())
    if diff and pool:
        top = max(EMOSET.labels, key=lambda e: (pool[e], -EMOSET.index(e)))
        pool[top] += diff
    elif diff:  # no "yes" at all (a single question): any other emotion
        pool.update({e: 1 for e in EMOSET.labels})
    rng = random.Random(f"{key}:no")
    order = sorted(no_index, key=lambda i: records[i]["id"])
    rng.shuffle(order)
    confused = {e for e, row in (rows or {}).items() if any(w > 0 for p, w in row.items() if p != e)}
    order.sort(key=lambda i: records[i]["emotion"] not in confused)  # stable: constrained ones first
    out: dict[int, str] = {}
    for i in order:
        emotion = records[i]["emotion"]
        row = (rows or {}).get(emotion, {}) if emotion in confused else {}
        names = [e for e in EMOSET.labels if e != emotion and pool[e] > 0]
        weights = [pool[e] * row.get(e, 0.0) for e in names] if row else []
        if not any(w > 0 for w in weights):
            weights = [pool[e] for e in names]
        if names:
            name = rng.choices(names, weights=weights)[0]
            pool[name] -= 1
        else:  # only this question's own emotion is left: trade it with an earlier question
            j = next((j for j, c in out.items() if records[j]["emotion"] != emotion and c != emotion), None)
            if j is None:  # e.g. a single emotion in the split: balance is impossible, name any other
                name = rng.choice([e for e in EMOSET.labels if e != emotion])
            else:
                name, out[j] = out[j], emotion
                pool[emotion] -= 1
        out[i] = name
    return out


def multiple_choice_questions(records: Sequence[Mapping], seed: int = 0, instruction_format: str = "answer_tags",
                              split: str | None = None, system_prompt: str | None = None) -> list[dict]:
    """The 8 emotions lettered A..H in a per-question shuffled order; gold = the true emotion's letter.
    Every block of 8 questions (in a seeded order) uses each gold letter once. Same order as `records`."""
    records = [_check_record(r, f" {i}") for i, r in enumerate(records)]
    _check_instruction_format(instruction_format)
    n_opts = len(EMOSET.labels)
    order = _balanced_order(records, f"{seed}:multiple_choice:{split}")
    positions = [0] * len(records)
    block_rng = random.Random(f"{seed}:multiple_choice:{split}:letters")
    for start in range(0, len(order), n_opts):
        block = list(range(n_opts))
        block_rng.shuffle(block)
        for index, position in zip(order[start:start + n_opts], block):
            positions[index] = position
    out = []
    for record, position in zip(records, positions):
        emotion = record["emotion"]
        others = [e for e in EMOSET.labels if e != emotion]
        random.Random(f"{seed}:multiple_choice:{record['id']}").shuffle(others)
        options = others[:position] + [emotion] + others[position:]
        lines = "\n".join(f"{LETTERS[i]}. {name}" for i, name in enumerate(options))
        text = f"Which emotion does this image evoke?\n{lines}\nAnswer with the letter of the correct option."
        out.append(_example(record, "multiple_choice", text, LETTERS[position], instruction_format, split,
                            system_prompt, options=options))
    return out


def misleading_questions(records: Sequence[Mapping], seed: int = 0, confusion=None, pick: str = "proportional",
                         instruction_format: str = "answer_tags", split: str | None = None,
                         system_prompt: str | None = None, right: float = MISLEADING_RIGHT) -> list[dict]:
    """A suggestion Y that is right (the true emotion) in floor or ceil of right x n questions, spread evenly over
    the emotions, and otherwise a confusable wrong emotion (see the module docstring for how it is drawn);
    gold = the true emotion name. Same order as `records`."""
    records = [_check_record(r, f" {i}") for i, r in enumerate(records)]
    _check_instruction_format(instruction_format)
    _check_pick(pick)
    right = _check_share("misleading right share", right)
    rows = _confusion_rows(confusion)
    choices = ", ".join(EMOSET.labels)
    # Rank r of a seeded, emotion-grouped order is "right" when floor((r + 1) x right + offset) steps up:
    # floor or ceil of n x right questions, evenly spaced, so every emotion gets its share.
    order = _balanced_order(records, f"{seed}:misleading:{split}")
    is_right = _spread(order, right, random.Random(f"{seed}:misleading:{split}:start").random(), len(records))
    # A wrong suggestion has the true polarity in a share `same` of the questions, chosen so that overall
    # the suggestion's polarity agrees with the truth half of the time: right + (1 - right) x same = 1/2.
    same = max(0.0, (0.5 - right) / (1 - right)) if right < 1 else 0.0  # above 1/2 the polarity must leak
    wrong_order = [i for i in order if not is_right[i]]
    same_polarity = _spread(wrong_order, same, random.Random(f"{seed}:misleading:{split}:polarity").random(),
                            len(records))
    out = []
    for i, (record, suggest_true) in enumerate(zip(records, is_right)):
        emotion = record["emotion"]
        rng = random.Random(f"{seed}:misleading:{record['id']}")
        candidate = emotion if suggest_true else _pick_misleading(emotion, rng, rows, pick, same_polarity[i])
        text = (f"Someone says this image evokes {candidate}. Is that right? If it is, answer {candidate}; "
                f"if not, answer with the emotion the image actually evokes. Choose one of: {choices}.")
        out.append(_example(record, "misleading", text, emotion, instruction_format, split, system_prompt,
                            candidate=candidate))
    return out


def misleading_option(emotion: str, rng: random.Random, confusion=None, pick: str = "proportional",
                      same_polarity: bool = True) -> str:
    """A misleading emotion for an image of `emotion`, of its polarity (`same_polarity`) or the other one: from
    the confusion row's wrong mass within that polarity when it has some, else a random one. Never `emotion`."""
    _check_pick(pick)
    return _pick_misleading(EMOSET.validate(emotion), rng, _confusion_rows(confusion), pick, same_polarity)


def _confusable(emotion: str, rng: random.Random, rows: dict | None, pick: str,
                allowed: Sequence[str] | None = None) -> str | None:
    """A wrong emotion (among `allowed`) from the confusion row of `emotion` (None when it has no such mass)."""
    row = (rows or {}).get(emotion, {})
    allowed = EMOSET.labels if allowed is None else allowed
    wrong = [(e, row[e]) for e in allowed if e != emotion and row.get(e, 0.0) > 0]
    if not wrong:
        return None
    if pick == "most_confused":
        top = max(w for _, w in wrong)
        return rng.choice([e for e, w in wrong if w == top])
    return rng.choices([e for e, _ in wrong], weights=[w for _, w in wrong])[0]


def _pick_misleading(emotion: str, rng: random.Random, rows: dict | None, pick: str, same_polarity: bool) -> str:
    polarity = EMOSET.polarity(emotion)
    allowed = [e for e in EMOSET.labels if e != emotion and (EMOSET.polarity(e) == polarity) == same_polarity]
    return _confusable(emotion, rng, rows, pick, allowed) or rng.choice(allowed)


def _spread(order: Sequence[int], share: float, offset: float, n: int) -> list[bool]:
    """flags[index] for the indices of `order`: rank r is flagged when floor((r + 1) x share + offset) steps up,
    i.e. floor or ceil of len(order) x share flags, evenly spaced along the (emotion-grouped) order."""
    flags = [False] * n
    for rank, index in enumerate(order):
        flags[index] = math.floor((rank + 1) * share + offset) > math.floor(rank * share + offset)
    return flags


def instruction(qtype: str, instruction_format: str = "answer_tags") -> str:
    """The reply-format sentence appended to a question of type `qtype`."""
    _check_instruction_format(instruction_format)
    what = _ANSWER_WHAT[_check_types([qtype])[0]]
    if instruction_format == "think_answer":
        return ("First think briefly inside <think></think> tags, then give your final answer "
                f"({what}) inside <answer></answer> tags.")
    return f"Reply with your final answer ({what}) inside <answer></answer> tags and nothing else."


def to_dataset(examples: Sequence[Mapping], decode_images: bool = True):
    """A `datasets.Dataset` of the examples for GRPOTrainer (which accepts only Dataset/IterableDataset).

    decode_images=True casts ``image`` to `datasets.Image(mode="RGB")`: paths stay on disk and rows decode
    lazily to RGB PIL images (grayscale, palette and RGBA files included)."""
    import datasets

    if not examples:
        raise EmoError("no examples to put in a dataset")
    ds = datasets.Dataset.from_list([dict(e) for e in examples])
    if decode_images and "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image(mode="RGB"))
    return ds


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def _example(record: Mapping, qtype: str, question: str, answer: str, instruction_format: str,
             split: str | None, system_prompt: str | None, candidate: str | None = None,
             options: list[str] | None = None) -> dict:
    text = f"{question}\n{instruction(qtype, instruction_format)}"
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    if system_prompt:
        # list content, like the user turn: a datasets column cannot mix strings and lists
        prompt.insert(0, {"role": "system", "content": [{"type": "text", "text": str(system_prompt)}]})
    return {
        "prompt": prompt,
        "image": record["image"],
        "answer": answer,
        "qtype": qtype,
        "emotion": record["emotion"],
        "image_id": record["id"],
        "split": split if split is not None else record.get("split"),
        "candidate": candidate,
        "options": list(options or []),
        "instruction_format": instruction_format,
    }


def _balanced_order(records: Sequence[dict], key: str) -> list[int]:
    """Record indices grouped by emotion (EMOSET order), seeded-shuffled within each emotion; independent of
    the input order (ties on id keep input order)."""
    by_emotion: dict[str, list[int]] = {}
    for i in sorted(range(len(records)), key=lambda i: records[i]["id"]):
        by_emotion.setdefault(records[i]["emotion"], []).append(i)
    order: list[int] = []
    for emotion in EMOSET.labels:
        idx = by_emotion.get(emotion, [])
        random.Random(f"{key}:{emotion}").shuffle(idx)
        order.extend(idx)
    return order


def _check_types(types) -> list[str]:
    if isinstance(types, str):
        types = [types]
    out = []
    for t in types:
        if t not in QTYPES:
            raise EmoError(f"unknown question type {t!r}{close_matches(str(t), QTYPES)}; valid: {', '.join(QTYPES)}")
        if t not in out:
            out.append(t)
    if not out:
        raise EmoError(f"no question types given; valid: {', '.join(QTYPES)}")
    return out


def _check_instruction_format(name: str) -> None:
    if name not in INSTRUCTION_FORMATS:
        raise EmoError(f"unknown instruction format {name!r}{close_matches(str(name), INSTRUCTION_FORMATS)}; "
                       f"valid: {', '.join(INSTRUCTION_FORMATS)}")


def _check_share(what: str, value) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise EmoError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= share <= 1.0:
        raise EmoError(f"{what} must be in [0, 1], got {value!r}")
    return share


def _check_pick(pick: str) -> None:
    if pick not in MISLEADING_PICKS:
        raise EmoError(f"unknown misleading pick {pick!r}{close_matches(str(pick), MISLEADING_PICKS)}; "
                       f"valid: {', '.join(MISLEADING_PICKS)}")


def _confusion_rows(confusion) -> dict[str, dict[str, float]] | None:
    """Validated {true: {pred: weight}} (weights finite, >= 0) from a nested mapping or an 8x8 matrix."""
    if confusion is None:
        return None
    if hasattr(confusion, "tolist") and not isinstance(confusion, Mapping):
        confusion = confusion.tolist()
    if isinstance(confusion, Mapping):
        items = list(confusion.items())
    elif isinstance(confusion, Sequence) and not isinstance(confusion, str):
        if len(confusion) != len(EMOSET.labels):
            raise EmoError(f"a confusion matrix given as a list needs {len(EMOSET.labels)} rows in EmoSet order "
                           f"({', '.join(EMOSET.labels)}), got {len(confusion)}")
        items = list(zip(EMOSET.labels, confusion))
    else:
        raise EmoError(f"confusion must be {{true: {{pred: weight}}}} or an 8x8 matrix, got {type(confusion).__name__}")
    rows: dict[str, dict[str, float]] = {}
    for true, row in items:
        true = EMOSET.validate(true)
        if isinstance(row, Mapping):
            pairs = list(row.items())
        elif isinstance(row, Sequence) and not isinstance(row, str) and len(row) == len(EMOSET.labels):
            pairs = list(zip(EMOSET.labels, row))
        else:
            raise EmoError(f"confusion row {true!r} must map predicted emotions to weights, got {row!r}")
        out_row: dict[str, float] = {}
        for pred, weight in pairs:
            pred = EMOSET.validate(pred)
            try:
                w = float(weight)
            except (TypeError, ValueError):
                raise EmoError(f"confusion[{true!r}][{pred!r}] is not a number: {weight!r}") from None
            if not math.isfinite(w) or w < 0:
                raise EmoError(f"confusion[{true!r}][{pred!r}] must be finite and >= 0, got {weight!r}")
            out_row[pred] = out_row.get(pred, 0.0) + w
        rows[true] = out_row
    return rows
