"""`emo eval explanation`: a SEVLM run on a prepared ArtEmis split, with the paper's protocol.

- Emotion accuracy over artworks with a strict-majority emotion (more than half of the votes), the prediction
  being the generated text before "because" (exact match with one of the 9 labels).
- Explanation metrics over every artwork (right emotion or not), on the text after "because" only, against
  all of the artwork's human explanations: COCO BLEU-1..4, METEOR, ROUGE-L, CIDEr (`emocli.metrics.text`;
  SPICE skipped, see its reason), sacreBLEU beside them, Unique (share of distinct explanations) and Metaphor
  (share containing a simile phrase such as "looks like" or "reminds me").
- Reference rows: the third-party SEVLM / NLX-GPT numbers on ArtEmis v1.0 (SAEA, ICASSP 2026; unclear whether
  copied from the paper), marked as references. ArtEmis's Emo-Alignment needs its pickled LSTM classifier and is
  not computed.

Writes RUN/metrics.json, RUN/predictions.jsonl, RUN/report.md, RUN/report.html, RUN/plots/confusion.png.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from emocli.errors import EmoError

log = logging.getLogger("emocli")

METAPHOR_PHRASES = ("looks like", "look like", "reminds me", "remind me", "as if", "feels like", "like a",
                    "makes me think of", "resembles", "it is like", "seems like")
# SAEA README (ICASSP 2026), ArtEmis v1.0 test; ACC in %, BLEU/METEOR/ROUGE-L x100 (see the SEVLM digest)
REFERENCE_ROWS = {
    "NLX-GPT (ArtEmis v1.0, third-party)": {"accuracy": 63.6, "BLEU-1": 53.8, "BLEU-2": 29.9, "BLEU-3": 16.3,
                                            "BLEU-4": 9.3, "METEOR": 13.8, "ROUGE-L": 30.3},
    "SEVLM (ArtEmis v1.0, third-party)": {"accuracy": 65.6, "BLEU-1": 54.2, "BLEU-2": 30.3, "BLEU-3": 16.4,
                                          "BLEU-4": 9.2, "METEOR": 13.9, "ROUGE-L": 30.4},
    "SEVLM (ArtEmis v2.0 combined, third-party)": {"accuracy": 44.2, "BLEU-1": 51.8, "BLEU-2": 30.4,
                                                   "BLEU-3": 17.2, "BLEU-4": 10.1, "METEOR": 13.9, "ROUGE-L": 30.4},
}


def resolve_model_dir(run_or_model: str | Path, weights: str = "best") -> Path:
    """The SEVLM model folder of a run (RUN/best/model, else RUN/final/model) or a model folder itself."""
    from emocli.methods.sevlm.model import CONFIG_NAME

    path = Path(run_or_model)
    if (path / CONFIG_NAME).is_file():
        return path
    recipe = path / "recipe.yaml"
    if not path.is_dir():
        raise EmoError(f"--run {path} does not exist; pass an `emo train sevlm` run directory")
    if not recipe.is_file():
        raise EmoError(f"{path} is neither an `emo train sevlm` run (no recipe.yaml) nor a SEVLM model folder "
                       f"(no {CONFIG_NAME})")
    import yaml

    method = (yaml.safe_load(recipe.read_text()) or {}).get("method")
    if method != "sevlm":
        raise EmoError(f"{path} is a {method!r} run, not a SEVLM run (`emo train sevlm`)")
    order = ["best", "final"] if weights == "best" else ["final"]
    for name in order:
        if (path / name / "model" / CONFIG_NAME).is_file():
            return path / name / "model"
    raise EmoError(f"{path} has no trained SEVLM weights yet (no {' or '.join(f'{n}/model' for n in order)})")


def explanation_metrics(results: list[dict], meteor: bool, ptb: bool) -> dict:
    from emocli.metrics.text import coco_caption_scores, sacrebleu_score

    hyps = {r["artwork"]["image_id"]: r["explanation"] for r in results}
    refs = {r["artwork"]["image_id"]: r["artwork"]["explanations"] for r in results}
    scores = coco_caption_scores(hyps, refs, meteor=meteor, ptb=ptb)
    scores["sacreBLEU"] = sacrebleu_score(list(hyps.values()), [refs[k] for k in hyps])
    texts = [r["explanation"].lower() for r in results]
    scores["Unique"] = len(set(texts)) / len(texts)
    scores["Metaphor"] = sum(any(p in t for p in METAPHOR_PHRASES) for t in texts) / len(texts)
    return scores


def main(run, resume: bool = False) -> None:
    import torch

    from emocli.data.artemis import PreparedArtEmis, majority_emotion
    from emocli.emotions import ARTEMIS
    from emocli.evaluation.report import Column, Report, Row
    from emocli.methods.sevlm.model import SevlmPipeline
    from emocli.methods.sevlm.train import emotion_accuracy, explain_artworks
    from emocli.metrics.plots import plot_confusion
    from emocli.metrics.text import SPICE_SKIPPED
    from emocli.progress import setup_logging

    setup_logging(run.dir, True)
    recipe = run.recipe
    torch.manual_seed(recipe.run.seed)
    device = recipe.device if recipe.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = resolve_model_dir(recipe.model.run, recipe.model.weights)
    pipeline = SevlmPipeline.from_pretrained(model_dir, device=device)
    data = PreparedArtEmis(recipe.data.prepared, recipe.data.images)
    artworks = data.artworks(recipe.data.split)[: recipe.data.max_images]
    if not artworks:
        raise EmoError(f"{recipe.data.prepared} has no {recipe.data.split} artworks")
    bad: list[str] = []
    decode = recipe.decode.model_dump()
    generator = torch.Generator(device=device).manual_seed(recipe.run.seed) if not decode["greedy"] else None
    log.info("explaining %d %s artworks with %s", len(artworks), recipe.data.split, model_dir)
    results = explain_artworks(pipeline, artworks, recipe.data.batch_size, {**decode, "generator": generator}, bad)
    if not results:
        raise EmoError(f"none of the {len(artworks)} images could be read (first: {bad[:1]})")
    accuracy, majority = emotion_accuracy(results)
    scores = explanation_metrics(results, recipe.metrics.meteor, recipe.metrics.ptb_tokenizer)
    labels = list(ARTEMIS.labels)
    confusion = [[0] * (len(labels) + 1) for _ in labels]
    for r in results:
        true = majority_emotion(r["artwork"]["emotion_histogram"])
        if true is not None:
            column = labels.index(r["emotion"]) if r["emotion"] in labels else len(labels)
            confusion[labels.index(true)][column] += 1
    metrics = {
        "model": str(model_dir), "split": recipe.data.split, "artworks": len(results), "bad_images": bad,
        "emotion_accuracy": accuracy, "majority_artworks": majority, **scores,
        "tokenizer": "PTB (Stanford CoreNLP 3.4.1)" if recipe.metrics.ptb_tokenizer else "lower-cased word split",
        "spice": SPICE_SKIPPED, "emo_alignment": "not computed: needs ArtEmis's pickled LSTM text classifier",
        "confusion": {"rows": labels, "columns": labels + ["no emotion"], "counts": confusion},
    }
    with (run.dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"image_id": r["artwork"]["image_id"], "image": r["artwork"]["image"],
                                "text": r["text"], "emotion": r["emotion"], "explanation": r["explanation"],
                                "references": r["artwork"]["explanations"]}, ensure_ascii=False) + "\n")
    plot = plot_confusion(confusion, labels, labels + ["no emotion"], run.dir / "plots" / "confusion.png",
                          "Emotion (strict-majority artworks)")

    report = Report(f"emo eval explanation: {model_dir}", facts={
        "data": f"{recipe.data.prepared} ({recipe.data.split}, {len(results)} artworks, {majority} with a "
                f"strict-majority emotion)", "decoding": "greedy" if decode["greedy"] else
        f"top-p {decode['top_p']}, temperature {decode['temperature']}", "tokenizer": metrics["tokenizer"]})
    columns = [Column("accuracy", "Emotion acc. %", True, 1)] + [
        Column(k, k, True, 1) for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")]
    columns += [Column("CIDEr", "CIDEr", True, 1), Column("sacreBLEU", "sacreBLEU", True, 1),
                Column("Unique", "Unique %", True, 1), Column("Metaphor", "Metaphor %", None, 1)]
    table = report.table("Results (x100)", columns, caption="Explanation metrics score the text after "
                         "\"because\" against every human explanation of the artwork.")
    if recipe.metrics.reference_rows:
        for name, values in REFERENCE_ROWS.items():
            table.add(Row(name, values, reference=True, note="SAEA README; not re-run here"))
    this = {"accuracy": 100 * accuracy, **{k: 100 * scores[k] for k in scores if k not in ("sacreBLEU",)},
            "sacreBLEU": scores["sacreBLEU"]}
    table.add(Row(f"this run ({Path(recipe.model.run).name})", {k: v for k, v in this.items()
                                                                  if k in {c.key for c in columns}}, highlight=True))
    report.section("Conventions", bullets=[
        "**Emotion accuracy**: artworks whose human votes give one emotion more than half; prediction = the "
        "generated text before \"because\".",
        "**BLEU/METEOR/ROUGE-L/CIDEr**: COCO caption toolkit (pycocoevalcap), corpus level; CIDEr is CIDEr-D "
        "with IDF from these references (x100 here, 0-1000 scale).",
        "**sacreBLEU**: 13a tokenizer, corpus level, 0-100; not comparable with BLEU-4 above.",
        f"**SPICE**: {SPICE_SKIPPED}.",
        "**Emo-Alignment**: not computed (needs ArtEmis's pickled LSTM classifier).",
        "Reference rows are third-party numbers on the real ArtEmis test set, not comparable with a run on "
        "other data."])
    report.plot("Emotion confusion (strict-majority artworks)", plot)
    report.links("Files", [("metrics.json", run.dir / "metrics.json"), ("predictions.jsonl",
                                                                       run.dir / "predictions.jsonl")])
    report.write(run.dir, metrics=metrics)
    log.info("emotion accuracy %.4f (%d artworks), BLEU-4 %.4f, CIDEr %.4f -> %s", accuracy, majority,
             scores["BLEU-4"], scores["CIDEr"], run.dir / "report.md")
