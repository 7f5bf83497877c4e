"""Emotion understanding with a vision-language model: loading, batched greedy answers, `predict`, and
`emo eval understanding` (base model against a GRPO-tuned run on the same saved test questions).

Prompts are rendered exactly as GRPOTrainer renders them during training: the question's chat messages
get the image in their placeholder (`trl.data_utils.prepare_multimodal_messages`) and go through the
processor's chat template with the generation prompt. Decoding is greedy.

Scores (per model, over the evaluated questions)
------------------------------------------------
accuracy/<type>     the reward's rule (`rewards.accuracy_reward`): the answer inside <answer> tags is right
accuracy/all        over every question
format              share of replies in the required format (`rewards.format_reward`)
eight_class         multiple-choice replies mapped to an emotion (`rewards.answer_to_emotion`: the letter
                    through the question's option order, or a named emotion; the <answer> content when there
                    is one, else the whole reply). Accuracy and macro-F1 over the 8 EmoSet classes; a reply
                    that names no emotion counts as wrong (column "no answer" of the confusion matrix).
polarity            share of multiple-choice and misleading questions whose reply names an emotion of the
                    true polarity (positive / negative); no emotion counts as wrong. Misleading questions
                    whose suggestion gives the polarity away (older questions files) are left out.
blind               the same scores for text-only policies (`emocli.methods.grpo.blind`), in every report.
binary_yes_rate     share of "yes" among binary replies (the gold answers are half yes, half no).
misleading_accepted share of misleading questions with a wrong suggestion answered with it.

Outputs of an evaluation run: metrics.json, report.md (base | tuned | difference), confusion_<model>.png,
confusion_<model>.json ({"labels", "matrix"} 8x8 counts, rows true, plus "no_answer"; usable as a GRPO
recipe's data.confusion for misleading options), predictions_<model>.jsonl and questions.jsonl.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.runs import Run, write_json_atomic
from emocli.written import publish

log = logging.getLogger("emocli")

NO_ANSWER = "no answer"
QUESTIONS_DIR = "questions"


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EmoError("device 'cuda' was asked for but no CUDA device is available")
    return name


def resolve_dtype(name: str, device: str):
    """A torch dtype from a recipe's dtype name; "auto": bfloat16 on a GPU, float32 on CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def is_run_dir(path) -> bool:
    return (Path(str(path)).expanduser() / "recipe.yaml").is_file()


def model_folder(spec: str) -> str:
    """The model of `spec`: a GRPO run directory gives its final/model, anything else is returned as is."""
    path = Path(str(spec)).expanduser()
    if is_run_dir(path):
        final = path / "final" / "model"
        if not final.is_dir():
            raise EmoError(f"{path} has no final/model: the run has not finished (continue it with "
                           f"`emo understand grpo ... --resume`)")
        return str(final)
    return str(spec)


def load_processor(spec: str, recipe_key: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """AutoProcessor with left padding (batched generation); a processor that needs torchvision says so."""
    from emocli.hub import load_pretrained

    kwargs = {"padding_side": "left"}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels

    def loader(name, **kw):
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(name, **kw)
        except (ImportError, AttributeError, ValueError, KeyError) as e:
            if "torchvision" in str(e).lower() or _missing("torchvision") and "video" in str(e).lower():
                raise EmoError(f"the processor of {name!r} needs torchvision (recipe key {recipe_key}): "
                               f"install the vision extra, pip install 'emocli[vision]'") from None
            raise

    return load_pretrained(loader, spec, recipe_key, what="processor", **kwargs)


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def load_model(spec: str, recipe_key: str, dtype, attn_implementation: str | None = None):
    """AutoModelForImageTextToText (a PEFT adapter folder loads onto its base model)."""
    from transformers import AutoModelForImageTextToText

    from emocli.hub import load_pretrained

    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return load_pretrained(AutoModelForImageTextToText.from_pretrained, spec, recipe_key,
                           what="vision-language model", **kwargs)


def load_vlm(spec: str, recipe_key: str, dtype: str = "auto", attn_implementation: str | None = None,
             device: str = "auto", min_pixels: int | None = None, max_pixels: int | None = None):
    """(model in eval mode on `device`, processor) for inference; `spec` may be a GRPO run directory."""
    from emocli.hub import quiet_loading

    quiet_loading()
    device = resolve_device(device)
    folder = model_folder(spec)
    processor = load_processor(folder, recipe_key, min_pixels, max_pixels)
    model = load_model(folder, recipe_key, resolve_dtype(dtype, device), attn_implementation)
    return model.to(device).eval(), processor


# ---------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------
def _conversation(example: dict) -> list[dict]:
    from trl.data_utils import prepare_multimodal_messages

    return prepare_multimodal_messages(copy.deepcopy(example["prompt"]), images=[_image(example["image"])])


def _image(path):
    from emocli.data.emoset import CorruptImage, load_rgb

    try:
        return load_rgb(path)
    except CorruptImage as e:
        raise EmoError(f"cannot read image {e}") from None


def _inputs(model, processor, conversations: list[list[dict]]):
    inputs = processor.apply_chat_template(conversation=conversations, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt",
                                           processor_kwargs={"padding": True})
    out = {}
    for key, value in inputs.items():
        if hasattr(value, "to"):
            value = value.to(model.device)
            if value.is_floating_point():
                value = value.to(model.dtype)
        out[key] = value
    return out


def answer_questions(model, processor, examples: Sequence[dict], batch_size: int = 16, max_new_tokens: int = 64,
                     progress: bool = True, description: str = "answers") -> list[str]:
    """Greedy replies (decoded, special tokens dropped) to question examples, in order."""
    import torch

    from emocli.progress import track

    tokenizer = getattr(processor, "tokenizer", processor)
    texts: list[str] = []
    batches = [list(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    for batch in track(batches, description=description, enabled=progress, every=1):
        inputs = _inputs(model, processor, [_conversation(e) for e in batch])
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                                 repetition_penalty=1.0)  # greedy means greedy: no penalty from the model's config
        new = out[:, inputs["input_ids"].shape[1]:]
        texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts


def rank_options(model, processor, example: dict) -> list[float]:
    """Log-likelihood of the reply "<answer>L</answer>" for each option letter L of a multiple-choice example
    (one batched forward pass), in option order."""
    import torch

    from emocli.methods.grpo.questions import LETTERS

    tokenizer = getattr(processor, "tokenizer", processor)
    options = example["options"]
    conv = _conversation(example)
    inputs = _inputs(model, processor, [conv] * len(options))
    replies = [tokenizer(f"<answer>{LETTERS[i]}</answer>", add_special_tokens=False)["input_ids"]
               for i in range(len(options))]
    width = max(len(r) for r in replies)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    reply_ids = torch.tensor([r + [pad] * (width - len(r)) for r in replies], device=model.device)
    reply_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in replies], device=model.device)
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], reply_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], reply_mask], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(reply_ids)], dim=1)
    with torch.inference_mode():
        logits = model(**inputs).logits.float()
    logprobs = torch.log_softmax(logits[:, prompt_len - 1:-1], dim=-1)
    picked = logprobs.gather(-1, reply_ids.unsqueeze(-1)).squeeze(-1) * reply_mask
    return picked.sum(dim=1).tolist()


@dataclass
class Prediction:
    emotion: str
    text: str  # the model's reply
    question: dict = field(repr=False)
    ranked: bool = False  # the reply named no emotion: the options were ranked by likelihood
    scores: list[float] | None = None


def predict_question(image: str, instruction_format: str = "answer_tags", system_prompt: str | None = None,
                     seed: int = 0) -> dict:
    """A multiple-choice question about `image` (8 emotions, shuffled letters), as the training questions."""
    from emocli.methods.grpo.questions import multiple_choice_questions

    # The builder needs a gold emotion to place; it only decides the letter order, which the model never sees
    # as right or wrong. Drop it so nothing downstream mistakes it for a label.
    example = multiple_choice_questions([{"id": Path(image).stem or "image", "emotion": EMOSET.labels[0],
                                          "image": str(image)}], seed=seed, instruction_format=instruction_format,
                                        system_prompt=system_prompt)[0]
    example["answer"] = example["emotion"] = None
    example["split"] = "predict"
    return example


def predict(image, run=None, model=None, device: str = "auto", max_new_tokens: int = 64, seed: int = 0,
            dtype: str | None = None) -> Prediction:
    """The emotion `image` evokes, from a GRPO run (its final model and question format) or a model folder."""
    from emocli.methods.grpo.rewards import answer_to_emotion

    if (run is None) == (model is None):
        raise EmoError("give exactly one of --run RUN_DIR (a `emo understand grpo` run) or --model PATH_OR_ID")
    image = Path(image).expanduser()
    _image(image)  # a clear error for a missing or broken file, before loading the model
    fmt, system_prompt, key = "answer_tags", None, "--model"
    m = None
    if run is not None:
        run_obj = Run.open(run)
        if run_obj.recipe.method != "grpo":
            raise EmoError(f"{run} is a {run_obj.recipe.method!r} run, not a `emo understand grpo` run")
        data, m = run_obj.recipe.data, run_obj.recipe.model
        fmt, system_prompt, key, spec = data.instruction_format, data.system_prompt, "--run", str(run)
    else:
        spec = str(model)
    vlm, processor = load_vlm(spec, key, dtype=dtype or (m.dtype if m else "auto"),
                              attn_implementation=m.attn_implementation if m else None, device=device,
                              min_pixels=m.min_pixels if m else None, max_pixels=m.max_pixels if m else None)
    question = predict_question(str(image), fmt, system_prompt, seed)
    text = answer_questions(vlm, processor, [question], batch_size=1, max_new_tokens=max_new_tokens,
                            progress=False)[0]
    emotion = answer_to_emotion(question, text)
    if emotion is not None:
        return Prediction(emotion=emotion, text=text, question=question)
    scores = rank_options(vlm, processor, question)
    best = max(range(len(scores)), key=scores.__getitem__)
    return Prediction(emotion=question["options"][best], text=text, question=question, ranked=True, scores=scores)


# ---------------------------------------------------------------------------------------------------
# Questions files
# ---------------------------------------------------------------------------------------------------
def read_questions(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise EmoError(f"questions file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise EmoError(f"{path}:{n} is not valid JSON") from None
    if not out:
        raise EmoError(f"{path} holds no questions")
    return out


def write_questions(path, examples: Sequence[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    publish(tmp, path)


def questions_of(source: str, split: str) -> Path:
    """A run directory's questions/<split>.jsonl, or `source` itself when it is a file."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        return path
    if is_run_dir(path):
        file = path / QUESTIONS_DIR / f"{split}.jsonl"
        if not file.is_file():
            raise EmoError(f"{path} has no {QUESTIONS_DIR}/{split}.jsonl (is it a `emo understand grpo` run?)")
        return file
    raise EmoError(f"questions source {str(source)!r} is neither a questions JSONL file nor a run directory "
                   f"(recipe key data.questions)")


# ---------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------
def _columns(examples: Sequence[dict]) -> dict[str, list]:
    keys = ("answer", "qtype", "emotion", "candidate", "options", "instruction_format")
    return {k: [e.get(k) for e in examples] for k in keys}


def score(examples: Sequence[dict], texts: Sequence[str]) -> dict:
    """Metrics of replies `texts` to `examples` (see the module docstring)."""
    from emocli.methods.grpo.rewards import accuracy_reward, answer_to_emotion, format_reward, parse_answer
    from emocli.metrics.classification import confusion_matrix, per_class_scores

    if len(examples) != len(texts):
        raise EmoError(f"{len(examples)} questions but {len(texts)} replies")
    cols = _columns(examples)
    correct = accuracy_reward(list(texts), **cols)
    formatted = format_reward(list(texts), instruction_format=cols["instruction_format"])
    out: dict = {"n": len(examples), "accuracy": {}, "format": _mean(formatted)}
    for qtype in ("binary", "multiple_choice", "misleading"):
        idx = [i for i, e in enumerate(examples) if e["qtype"] == qtype]
        if idx:
            out["accuracy"][qtype] = _mean([correct[i] for i in idx])
    out["accuracy"]["all"] = _mean(correct)
    predicted = [answer_to_emotion(e, t) if e["qtype"] != "binary" else None for e, t in zip(examples, texts)]

    mc = [i for i, e in enumerate(examples) if e["qtype"] == "multiple_choice"]
    if mc:
        no_answer = len(EMOSET.labels)
        y_true = [EMOSET.index(examples[i]["emotion"]) for i in mc]
        y_pred = [EMOSET.index(predicted[i]) if predicted[i] else no_answer for i in mc]
        scores = per_class_scores(y_true, y_pred, labels=range(len(EMOSET.labels)))
        cm = confusion_matrix(y_true, y_pred, num_classes=no_answer + 1)[:no_answer]
        out["eight_class"] = {
            "n": len(mc),
            "accuracy": _mean([float(t == p) for t, p in zip(y_true, y_pred)]),
            "macro_f1": float(scores["f1"].mean()),
            "no_answer": _mean([float(p == no_answer) for p in y_pred]),
            "per_class_f1": {name: float(f) for name, f in zip(EMOSET.labels, scores["f1"])},
            "confusion": {"labels": list(EMOSET.labels), "matrix": cm[:, :no_answer].tolist(),
                          "no_answer": cm[:, no_answer].tolist()},
        }
    types = polarity_types(examples)
    emo_q = [i for i, e in enumerate(examples) if e["qtype"] in types]
    if emo_q:
        out["polarity_types"] = list(types)
        out["polarity"] = _mean([
            float(predicted[i] is not None and EMOSET.polarity(predicted[i]) == EMOSET.polarity(examples[i]["emotion"]))
            for i in emo_q])
    binary = [i for i, e in enumerate(examples) if e["qtype"] == "binary"]
    if binary:
        out["binary_yes_rate"] = _mean([float(_clean_answer(parse_answer(texts[i])) == "yes") for i in binary])
    # accepting a wrong suggestion (the questions whose suggestion is right reward accepting it)
    mis = [i for i, e in enumerate(examples) if e["qtype"] == "misleading" and e["candidate"] != e["emotion"]]
    if mis:
        out["misleading_accepted"] = _mean([float(predicted[i] is not None and predicted[i] == examples[i]["candidate"])
                                            for i in mis])
    return out


def polarity_types(examples: Sequence[dict]) -> tuple[str, ...]:
    """Question types the polarity metric covers: multiple choice, and misleading only where the suggestion's
    polarity says nothing about the truth (it agrees in 40-60% of the questions; questions built before the
    leak-free design agree in all of them, and a text-only policy would get the polarity right every time)."""
    mis = [e for e in examples if e["qtype"] == "misleading" and e.get("candidate") in EMOSET.labels]
    agree = _mean([float(EMOSET.polarity(e["candidate"]) == EMOSET.polarity(e["emotion"])) for e in mis])
    if mis and not 0.4 <= agree <= 0.6:
        log.warning("the misleading suggestions have the true polarity in %.0f%% of the questions: the polarity "
                    "metric leaves them out (the text alone gives it)", 100 * agree)
        return ("multiple_choice",)
    return ("multiple_choice", "misleading")


def blind_scores(examples: Sequence[dict]) -> dict:
    """{policy: score(...)} of the text-only policies of `emocli.methods.grpo.blind` on `examples`."""
    from emocli.methods.grpo.blind import POLICIES, blind_replies

    out = {}
    for policy in POLICIES:
        metrics = score(examples, blind_replies(examples, policy))
        out[policy] = {k: metrics[k] for k in ("accuracy", "polarity") if k in metrics}
    return out


def _clean_answer(answer: str | None) -> str | None:
    return None if answer is None else answer.strip().strip(".!\"'`").strip()


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


# ---------------------------------------------------------------------------------------------------
# Plot and report
# ---------------------------------------------------------------------------------------------------
def plot_confusion(confusion: dict, path, title: str) -> Path:
    """Rows: true emotion; columns: predicted, plus "no answer" (emocli.metrics.plots)."""
    import numpy as np

    from emocli.metrics.plots import plot_confusion as plot

    labels = confusion["labels"]
    counts = np.column_stack([np.asarray(confusion["matrix"], dtype=float),
                              np.asarray(confusion["no_answer"], dtype=float)])
    return plot(counts, labels, [*labels, NO_ANSWER], path, title, row_axis="true")


def _rows(metrics: dict) -> list[tuple[str, float | None]]:
    acc = metrics.get("accuracy", {})
    rows = [(f"accuracy: {q.replace('_', ' ')}", acc.get(q)) for q in ("binary", "multiple_choice", "misleading", "all")
            if q in acc]
    ec = metrics.get("eight_class")
    if ec:
        rows += [("8-class accuracy", ec["accuracy"]), ("8-class macro-F1", ec["macro_f1"]),
                 ("8-class no answer", ec["no_answer"])]
    for key, name in (("polarity", "polarity accuracy"), ("format", "format"),
                      ("binary_yes_rate", "binary: share of yes"),
                      ("misleading_accepted", "misleading: suggestion accepted")):
        if key in metrics:
            rows.append((name, metrics[key]))
    return rows


def write_report(result: dict, out_dir: Path) -> None:
    """metrics.json + report.md + report.html through the shared report module (emocli.evaluation.report)."""
    from emocli.evaluation.report import Column, Report, Row

    models = list(result["models"])
    q = result["questions"]
    facts = {"questions": f"{q['n']} ({q['images']} images, split {q['split']}) from `{q['source']}`",
             "by type": ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in q["by_type"].items()),
             "decoding": "greedy; every model answers exactly the same questions",
             **{name: f"`{result['models'][name]['model']}`" for name in models}}
    report = Report("Emotion understanding", facts=facts)
    paired = {"base", "tuned"} <= set(models)
    columns = [Column(name, name) for name in models] + ([Column("difference", "tuned - base")] if paired else [])
    table = report.table("Results", columns, first_column="metric")
    rows = {name: dict(_rows(result["models"][name]["metrics"])) for name in models}
    for metric in dict.fromkeys(k for name in models for k in rows[name]):
        values = {name: _number(rows[name].get(metric)) for name in models}
        if paired and values["base"] is not None and values["tuned"] is not None:
            values["difference"] = values["tuned"] - values["base"]
        table.add(Row(metric, values))
    per_class = {name: result["models"][name]["metrics"].get("eight_class", {}).get("per_class_f1") for name in models}
    if any(per_class.values()):
        f1 = report.table("F1 per emotion (multiple-choice questions)", [Column(m, m) for m in models],
                          first_column="emotion")
        for emotion in EMOSET.labels:
            f1.add(Row(emotion, {m: _number((per_class[m] or {}).get(emotion)) for m in models}))
    blind = result.get("blind")
    if blind:
        table = report.table("Blind baselines (text only, no image; same rewards and metrics)",
                             [Column(p, p.replace("_", " ")) for p in blind], first_column="metric")
        for metric in dict.fromkeys(k for p in blind for k, _ in _rows(blind[p])):
            table.add(Row(metric, {p: _number(dict(_rows(blind[p])).get(metric)) for p in blind}))
    for name in models:
        plot = result["models"][name].get("plot")
        if plot:
            report.plot(f"Confusion matrix, {name} (multiple-choice questions, rows: true emotion)", out_dir / plot)
    report.section("Conventions", paragraphs=[
        "Accuracy follows the reward's rule (the answer inside `<answer>` tags); the 8-class scores take the "
        "emotion a multiple-choice reply names, with or without tags. Polarity: replies naming an emotion of the "
        "true polarity, over multiple-choice questions and misleading ones whose suggestion does not give the "
        "polarity away. The blind baselines answer from the question text alone (emocli.methods.grpo.blind): "
        "what a model scores above them is what the image adds."])
    report.write(out_dir, metrics=result)


def _number(value):
    """None for a missing or NaN value (shown as a dash), else the float."""
    return None if value is None or value != value else float(value)


# ---------------------------------------------------------------------------------------------------
# emo eval understanding
# ---------------------------------------------------------------------------------------------------
def evaluation_questions(recipe) -> tuple[list[dict], str]:
    """(questions, where they come from) for an eval-understanding recipe; see EvalQuestionsSection."""
    d, models = recipe.data, recipe.models
    if d.questions is not None:
        path = questions_of(d.questions, d.split)
        examples, source = read_questions(path), str(path)
    elif models.tuned is not None and is_run_dir(models.tuned):
        path = questions_of(models.tuned, d.split)
        examples, source = read_questions(path), str(path)
    elif d.build is not None:
        from emocli.methods.grpo.train import build_question_sets

        examples = build_question_sets(d.build)[d.split]
        source = f"built from {d.build.prepared} (seed {d.build.seed})"
    else:
        raise EmoError("no questions to evaluate: set data.questions (a GRPO run or a questions JSONL), make "
                       "models.tuned a GRPO run directory, or give data.build (a prepared EmoSet)")
    if d.max_images is not None:
        keep = list(dict.fromkeys(e["image_id"] for e in examples))[: d.max_images]
        keep_set = set(keep)
        examples = [e for e in examples if e["image_id"] in keep_set]
    if not examples:
        raise EmoError(f"no questions left to evaluate from {source}")
    return examples, source


def evaluate_model(name: str, spec: str, recipe, examples: list[dict], out_dir: Path) -> dict:
    import gc

    import torch

    m, g = recipe.models, recipe.generation
    log.info("%s: loading %s", name, spec)
    model, processor = load_vlm(spec, f"models.{name}", dtype=m.dtype, attn_implementation=m.attn_implementation,
                                device=m.device, min_pixels=m.min_pixels, max_pixels=m.max_pixels)
    texts = answer_questions(model, processor, examples, g.batch_size, g.max_new_tokens, description=f"{name}")
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    metrics = score(examples, texts)
    entry = {"model": model_folder(spec), "metrics": metrics}
    if recipe.report.save_predictions:
        from emocli.methods.grpo.rewards import answer_to_emotion, parse_answer

        write_questions(out_dir / f"predictions_{name}.jsonl", [
            {"image_id": e["image_id"], "image": e["image"], "qtype": e["qtype"], "answer": e["answer"],
             "emotion": e["emotion"], "candidate": e["candidate"], "reply": t, "parsed": parse_answer(t),
             "predicted_emotion": answer_to_emotion(e, t) if e["qtype"] != "binary" else None}
            for e, t in zip(examples, texts)])
    confusion = metrics.get("eight_class", {}).get("confusion")
    if confusion is not None:
        write_json_atomic(out_dir / f"confusion_{name}.json", confusion)
        if recipe.report.plot:
            plot_confusion(confusion, out_dir / f"confusion_{name}.png", f"{name}: {Path(str(spec)).name}")
            entry["plot"] = f"confusion_{name}.png"
    acc = metrics["accuracy"]
    log.info("%s: accuracy %s", name, ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return entry


def main(run: Run, resume: bool = False) -> None:
    from emocli.progress import setup_logging

    setup_logging(run.dir)
    recipe = run.recipe
    examples, source = evaluation_questions(recipe)
    write_questions(run.dir / "questions.jsonl", examples)
    by_type = Counter(e["qtype"] for e in examples)
    result = {
        "questions": {"source": source, "split": recipe.data.split, "n": len(examples),
                      "images": len({e["image_id"] for e in examples}), "by_type": dict(by_type)},
        "models": {},
    }
    log.info("evaluating %d questions (%s) from %s", len(examples),
             ", ".join(f"{k} {v}" for k, v in by_type.items()), source)
    result["blind"] = blind_scores(examples)
    for name in ("base", "tuned"):
        spec = getattr(recipe.models, name)
        if spec is not None:
            result["models"][name] = evaluate_model(name, spec, recipe, examples, run.dir)
    if {"base", "tuned"} <= set(result["models"]):
        base, tuned = (dict(_rows(result["models"][k]["metrics"])) for k in ("base", "tuned"))
        result["difference"] = {k: tuned[k] - base[k] for k in tuned if k in base}
    write_report(result, run.dir)
    log.info("wrote %s, %s and %s", run.dir / "metrics.json", run.dir / "report.md", run.dir / "report.html")
