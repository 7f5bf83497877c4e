"""`emo eval empathy [RECIPE]`: an EmpathDiffuser run answers every speaker of a prepared AvaMERG split.

Per pair: the reply, the listener face and the predicted speaker emotion, from the speaker's utterance and
face only (RUN/predictions.jsonl, RUN/faces/<id>.png). Then, with the shared metric and report modules:

- replies vs the reference responses: nltk BLEU-1..4 in the empathetic-dialogue convention (sentence BLEU,
  cumulative weights, smoothing method1, data-free nltk word tokens, averaged), EmpathDiffuser's own BLEU-4
  variant (white-space tokens, smoothing method4), sacreBLEU (corpus, 13a) and Dist-1/2 (corpus);
- listener faces: FID of the generated faces against the split's real listener frames, with the project's
  FID Inception (models.inception; none configured: FID is skipped with a note);
- speaker emotion: accuracy, macro-F1 over the 7 coarse classes, per class and the confusion matrix.
Writes RUN/metrics.json, report.md, report.html and plots/confusion.png.
"""

from __future__ import annotations

import json
import logging

import torch

from emocli.emotions import AVAMERG_COARSE
from emocli.errors import EmoError
from emocli.runs import Run

log = logging.getLogger("emocli")


def preflight(recipe) -> None:
    from pathlib import Path

    from emocli import preflight as pf
    from emocli.methods.empathdiffuser.train import _prepared_avamerg

    def run_is_empathdiffuser():
        run = Path(recipe.models.run).expanduser()
        if not (run / "final" / "empathdiffuser_run.json").is_file():
            raise EmoError(f"models.run {run} is not a finished EmpathDiffuser run (no final/empathdiffuser_run.json)")

    pf.check_all(run_is_empathdiffuser, lambda: _prepared_avamerg(recipe.data.prepared, recipe.data.split, "data.split"),
                 lambda: pf.local_path(recipe.models.inception, "models.inception", "FID Inception-v3 weights", "file"),
                 lambda: pf.device(recipe.models.device, "models.device"))


def text_metrics(replies: list[str], references: list[str]) -> dict[str, float]:
    from emocli.metrics.text import dialogue_bleu, distinct_n, sacrebleu_score

    refs = [[r] for r in references]
    out = {f"bleu{k[-1]}": v for k, v in dialogue_bleu(replies, refs).items()}
    out["bleu4_empathdiffuser"] = dialogue_bleu(replies, refs, tokenizer="whitespace", smoothing="method4")["BLEU-4"]
    out["sacrebleu"] = sacrebleu_score(replies, refs)
    out["dist1"], out["dist2"] = distinct_n(replies, 1), distinct_n(replies, 2)
    return out


def face_fid(inception_path: str, generated: list[str], real: list[str], device) -> float:
    from emocli.data.emoset import load_rgb
    from emocli.evaluation.backbones import InceptionExtractor, load_inception
    from emocli.metrics.fid import FeatureStats

    features = load_inception(inception_path, "models.inception", "tf", device)
    extract = InceptionExtractor(features, inception_path, "tf")

    def stats(paths):
        feats = torch.cat([extract([load_rgb(p) for p in paths[i:i + 16]]) for i in range(0, len(paths), 16)])
        return FeatureStats.from_features(feats)

    return float(stats(generated).fid(stats(real)))


def main(run: Run, resume: bool = False) -> None:
    from emocli.data.avamerg import read_prepared
    from emocli.evaluation.backbones import resolve_device
    from emocli.evaluation.report import Column, Report, Row
    from emocli.methods.empathdiffuser.sample import EmpathSampler
    from emocli.metrics.classification import classification_report
    from emocli.metrics.plots import plot_confusion
    from emocli.progress import setup_logging, step_progress

    setup_logging(run.dir, True)
    r = run.recipe
    device = resolve_device(r.models.device)
    _, samples = read_prepared(r.data.prepared)
    samples = [s for s in samples if s["split"] == r.data.split][: r.data.max_samples]
    if not samples:
        raise EmoError(f"{r.data.prepared} has no {r.data.split!r} pairs (recipe key data.split)")
    sampler = EmpathSampler.from_run(r.models.run, r.models.weights, device)
    d = sampler.defaults
    settings = {"steps": r.sample.steps or d.get("steps", 50),
                "guidance": d.get("guidance", 8.0) if r.sample.guidance is None else r.sample.guidance,
                "decoding": r.sample.decoding or d.get("decoding", "beam"), "max_tokens": d.get("max_reply_tokens", 67)}
    faces_dir = run.dir / "faces"
    faces_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    bs = r.sample.batch_size
    with step_progress(len(samples), "empathize", every=bs) as bar:
        for start in range(0, len(samples), bs):
            chunk = samples[start:start + bs]
            results = sampler.empathize([s["speaker_utterance"] for s in chunk], [s["speaker_image"] for s in chunk],
                                        seed=r.sample.seed + start, **settings)
            for s, res in zip(chunk, results):
                path = faces_dir / f"{s['id']}.png"
                res["face"].save(path)
                rows.append({"id": s["id"], "utterance": s["speaker_utterance"], "reference": s["response"],
                             "reply": res["reply"], "emotion": s["emotion"], "predicted": res["emotion"],
                             "probabilities": res["probabilities"], "face": str(path),
                             "real_face": s["listener_image"]})
                bar.update()
    with (run.dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")

    replies = [row["reply"] for row in rows]
    metrics: dict = {"split": r.data.split, "n": len(rows), "settings": settings,
                     "text": text_metrics(replies, [row["reference"] for row in rows])}
    emotion = classification_report([AVAMERG_COARSE.index(x["emotion"]) for x in rows],
                                    [AVAMERG_COARSE.index(x["predicted"]) for x in rows], list(AVAMERG_COARSE.labels))
    metrics["emotion"] = emotion
    notes = []
    if r.models.inception:
        metrics["fid"] = face_fid(r.models.inception, [x["face"] for x in rows], [x["real_face"] for x in rows], device)
    else:
        metrics["fid"] = None
        notes.append("FID not computed: set models.inception to FID Inception-v3 weights (pytorch-fid or torch-fidelity file)")
    confusion = plot_confusion(emotion["confusion"], AVAMERG_COARSE.labels, AVAMERG_COARSE.labels,
                               run.dir / "plots" / "confusion.png", "speaker emotion (rows: true)")

    report = Report(f"emo eval empathy: {r.models.run}", facts={
        "split": f"{r.data.split} of {r.data.prepared} ({len(rows)} pairs)", "weights": r.models.weights,
        "sampler": f"DPM-Solver++, {settings['steps']} steps, guidance g={settings['guidance']} (diffusers: g = s + 1)",
        "reply decoding": settings["decoding"]})
    t = metrics["text"]
    table = report.table("Replies", [Column("bleu1", "BLEU-1"), Column("bleu2", "BLEU-2"), Column("bleu3", "BLEU-3"),
                                     Column("bleu4", "BLEU-4"), Column("bleu4_ed", "BLEU-4 (EmpathDiffuser)"),
                                     Column("sacrebleu", "sacreBLEU", digits=2), Column("dist1", "Dist-1"),
                                     Column("dist2", "Dist-2")])
    table.add(Row("this run", {**{k: t[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "dist1", "dist2")},
                               "bleu4_ed": t["bleu4_empathdiffuser"]}, highlight=True))
    table = report.table("Listener faces and speaker emotion", [
        Column("fid", "FID", higher_is_better=False, digits=2), Column("acc", "emotion accuracy", percent=True, digits=1),
        Column("f1", "emotion macro-F1", digits=3)])
    table.add(Row("this run", {"fid": metrics["fid"], "acc": emotion["accuracy"], "f1": emotion["macro_f1"]},
                  highlight=True, flags=notes))
    report.section("Conventions", bullets=[
        "**BLEU-1..4**: nltk sentence BLEU, cumulative weights, smoothing method1, lower-cased nltk word tokens "
        "(data-free), averaged over replies (empathetic-dialogue papers)",
        "**BLEU-4 (EmpathDiffuser)**: the same with white-space tokens and smoothing method4 (its eval script)",
        "**sacreBLEU**: corpus BLEU 0-100, 13a tokenizer; **Dist-n**: distinct n-grams / all n-grams over all replies",
        "**FID**: generated listener faces vs the split's real listener frames, FID Inception-v3 (TF preprocessing)",
        "**emotion**: the [EMO] head with the response tokens pure noise, 7 coarse classes; macro-F1 over all 7"])
    report.plot("Speaker emotion confusion", confusion)
    report.links("Files", [("predictions.jsonl", run.dir / "predictions.jsonl"), ("faces/", faces_dir)])
    report.write(run.dir, metrics=metrics)
    log.info("BLEU-4 %.4f, sacreBLEU %.2f, Dist-1 %.3f, Dist-2 %.3f, FID %s, emotion accuracy %.3f, macro-F1 %.3f -> %s",
             t["bleu4"], t["sacrebleu"], t["dist1"], t["dist2"],
             "n/a" if metrics["fid"] is None else f"{metrics['fid']:.2f}", emotion["accuracy"], emotion["macro_f1"],
             run.dir / "report.md")
