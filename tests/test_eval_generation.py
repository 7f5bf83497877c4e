"""`emo train emotion-classifier` and `emo eval generation` on tiny backbones built here (CPU, offline).

One synthetic EmoSet (the session's `emoset_tiny`), prepared once; a tiny CLIP; random-weight FID Inception,
LPIPS AlexNet + heads and Sem-C ResNet-50s saved as safetensors; an Emo-A head trained by the real command.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emocli.errors import EmoError
from tests.conftest import run_emo, shared_path

EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
METRICS = ("fid", "lpips", "emo_a", "sem_c", "sem_d", "clip_i", "clip_t")
OFFICIAL_HEAD = ("data", "emogen-official", "weights", "Clip_emotion_classifier", "time_2023-11-12_03-29-best.pth")


def _records(prepared: Path) -> list[dict]:
    from emocli.evaluation.reference import read_records

    return read_records(prepared)


def _write_samples(out: Path, records: list[dict], per_emotion: int, size: int | None, split: str | None) -> Path:
    """An `emo sample`-style folder made of EmoSet images (resized when `size`), with .json sidecars."""
    from emocli.data.emoset import load_rgb
    from emocli.samples import write_sample

    counts: dict[str, int] = {}
    for rec in records:
        if split is not None and rec["split"] != split:
            continue
        e = rec["emotion"]
        if counts.get(e, 0) >= per_emotion:
            continue
        image = load_rgb(rec["image"])
        if size:
            image = image.resize((size, size))
        i = counts.get(e, 0)
        write_sample(out, e, f"{e}_{i:04d}", image, {"emotion": e, "object": "cup" if i == 0 else None,
                                                      "prompt": "<emo> cup", "seed": i})
        counts[e] = i + 1
    return out


@pytest.fixture(scope="module")
def env(emoset_tiny, tmp_path_factory):
    """Prepared synthetic EmoSet, tiny CLIP, tiny metric weights, samples, a trained tiny Emo-A head."""
    from emocli.commands.train import execute
    from emocli.evaluation.tiny import make_tiny_metric_weights
    from emocli.recipes.load import load_recipe
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("evalgen")
    try:
        from emocli.data.prepare import prepare_emoset

        prepared = Path(prepare_emoset(str(emoset_tiny), root / "prepared"))
    except ImportError:  # before `emo data prepare` existed: the release folder is accepted as it is
        prepared = Path(emoset_tiny)
    clip = make_tiny(root / "models", which=("clip",))["clip"]
    weights = make_tiny_metric_weights(root / "models" / "metrics")
    records = _records(prepared)
    samples = _write_samples(root / "samples", [r for r in records if r["split"] != "train"], 3, 48, None)
    classifier = root / "runs" / "classifier"
    execute(load_recipe("tiny/emotion-classifier", [f"data.prepared={prepared}", f"model.clip={clip}",
                                                    f"run.output_dir={classifier}"]))
    overrides = [f"data.prepared={prepared}", f"models.clip={clip}",
                 *(f"models.{k}={v}" for k, v in weights.items() if k != "emotion_head"),
                 f"models.emotion_head={classifier}"]
    return {"root": root, "prepared": prepared, "clip": clip, "weights": weights, "records": records,
            "samples": samples, "classifier": classifier, "overrides": overrides}


@pytest.fixture(scope="module")
def first_eval(env):
    """`emo eval generation tiny/eval-generation ...` through the real command line (in this process, to spare
    a second torch import; the subprocess tests below cover the exit codes)."""
    from typer.testing import CliRunner

    from emocli.cli import app
    from emocli.progress import setup_logging

    out = env["root"] / "runs" / "eval-a"
    done = CliRunner().invoke(app, ["eval", "generation", "tiny/eval-generation", f"data.samples={env['samples']}",
                                    *env["overrides"], "data.max_reference_per_emotion=3", f"run.output_dir={out}"])
    setup_logging(None, main_process=False)  # drop the handlers bound to the runner's captured streams
    assert done.exit_code == 0, (done.output[-3000:], done.exception)
    return out, done


# ============================================================================ emo train emotion-classifier


def test_emotion_classifier_trains_on_cached_clip_features(env):
    from emocli.methods.emotion_classifier.head import load_emotion_head
    from emocli.metrics.emotion import EmotionHead

    run = env["classifier"]
    metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert metrics["train"]["accuracy"] > 0.35  # chance is 1/8
    assert metrics["val"]["n"] > 0 and len(metrics["val"]["confusion"]) == 8
    assert sum(map(sum, metrics["val"]["confusion"])) == metrics["val"]["n"]
    assert metrics["feature_cache"]["train"]["computed"] == metrics["train"]["n"]
    assert (run / "final" / "confusion_matrix.png").stat().st_size > 1000
    assert list((run / "cache").glob("clip-*.safetensors"))
    # final/model: head safetensors + config; loads through our loader and EmotionHead.load_official
    config = json.loads((run / "final" / "model" / "emotion_head.json").read_text())
    assert config["dim"] == 32 and config["labels"][0] == "amusement" and config["clip"] == str(env["clip"])
    head, info = load_emotion_head(run, "models.emotion_head")
    official_style = EmotionHead.load_official(run / "final" / "model" / "emotion_head.safetensors")
    assert torch.equal(head.fc.weight, official_style.fc.weight) and info["dim"] == 32


def test_released_emotion_head_loads():
    from emocli.methods.emotion_classifier.head import load_emotion_head
    from emocli.metrics.emotion import EmotionHead

    path = shared_path(*OFFICIAL_HEAD)
    head, info = load_emotion_head(path, "models.emotion_head")
    assert info["dim"] == 768 and info["num_classes"] == 8
    official = EmotionHead.load_official(path)
    features = torch.randn(16, 768, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = features @ official.fc.weight.T + official.fc.bias
        assert torch.equal(head(features).argmax(1), expected.argmax(1))


# ============================================================================ emo eval generation


def test_eval_generation_end_to_end(env, first_eval):
    out, done = first_eval
    assert f"run: {out}" in done.output
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["metrics"]) == set(METRICS) and not result["skipped"]
    for name, m in result["metrics"].items():
        assert np.isfinite(m["value"]), name
        assert m["convention"] and m["definition"], name
        assert set(m["per_emotion"]) == set(EMOTIONS), name
    assert result["counts"]["generated"] == {e: 3 for e in EMOTIONS}
    assert result["counts"]["reference"] == {e: 3 for e in EMOTIONS}
    assert result["table1"]["Emo-A"] == result["metrics"]["emo_a"]["value"]
    # every backbone saw each image once; the reference statistics were computed and cached by the prepared set
    assert all(c == {"cached": 0, "computed": 24} for c in result["cache"]["generated"].values())
    for status in result["cache"]["reference"].values():
        assert len(status["computed"]) == 8 and Path(status["dir"]).is_relative_to(env["prepared"])
    report = (out / "report.md").read_text()
    assert "| Method | FID↓ | LPIPS↑ | Emo-A↑ | Sem-C↑ | Sem-D↑ | CLIP-I↑ | CLIP-T↑ |" in report
    assert "| EmoGen (paper) | 41.60 | 0.717 | 76.25% | 0.633 | 0.0335 | – | – | reference: EmoGen Table 1 |" in report
    assert "(this run)" in report and "## Conventions" in report
    # random tiny weights are not the reference networks: named in metrics.json, flagged in the Table-1 row
    assert result["weights"]["inception"]["status"] == "unverified"
    assert result["metrics"]["fid"]["weights"]["inception"]["path"] == str(Path(env["weights"]["inception"]).resolve())
    row = next(line for line in report.splitlines() if "(this run)" in line)
    assert "⚠ FID: unverified weights (models.inception)" in row and "⚠ Sem-C: unverified weights" in row
    assert "## Weights" in report
    # seeded bootstrap intervals per emotion and pooled; EmoGen's cross-emotion pair sampling beside ours
    for name, m in result["metrics"].items():
        lo, hi = m["ci"]["pooled"]
        assert lo <= m["value"] + 1e-9 and m["value"] <= hi + 1e-9 or name == "fid", (name, m["ci"])
        assert set(m["ci"]["per_emotion"]) <= set(EMOTIONS) and m["ci"]["resamples"] in (50, 200), name
    for key in ("lpips", "sem_d"):
        variant = result["metrics"][key]["original_pairs"]
        # the first emotion draws from its own images only, with the same generator: the same pairs
        assert variant["per_emotion"]["amusement"] == pytest.approx(result["metrics"][key]["per_emotion"]["amusement"])
        assert variant["per_emotion"]["sadness"] != pytest.approx(result["metrics"][key]["per_emotion"]["sadness"])
    assert "(this run, EmoGen's cross-emotion pairs)" in report
    assert "- reference image bytes: " in report  # original bytes or the re-encode, from prepare.json
    pairs = [json.loads(line) for line in (out / "per_pair.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 * 3 and {"lpips", "sem_d", "a", "b"} <= set(pairs[0])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8  # confusion matrix + 7 per-emotion bar charts
    assert html.count("data:image/jpeg;base64,") == 8 * 3  # the image grids
    assert "Emo-A confusion matrix" in html and "<h3>sadness</h3>" in html
    assert (out / "plots" / "emo_a_confusion.png").is_file()
    rows = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {"emo_a_pred", "sem_c", "clip_t_text"} <= set(rows[0])
    assert rows[0]["clip_t_text"] == "an image of amusement cup"


def test_eval_metrics_agree_with_the_metric_library(env, first_eval):
    """LPIPS (cached pair distances) and CLIP-I (cached reference means) equal the library's direct forms."""
    from emocli.data.emoset import load_rgb
    from emocli.evaluation.backbones import load_clip, load_lpips
    from emocli.methods.eval_generation.evaluate import read_generated
    from emocli.metrics.clip_scores import clip_i, clip_image_features
    from emocli.metrics.lpips import lpips_diversity
    from emocli.recipes.load import load_recipe

    out, _ = first_eval
    result = json.loads((out / "metrics.json").read_text())
    recipe = load_recipe(out / "recipe.yaml")
    generated, _ = read_generated(recipe.data)
    w = env["weights"]
    model = load_lpips(w["lpips_backbone"], w["lpips_heads"], "a", "b", torch.device("cpu"))
    direct = lpips_diversity({e: [load_rgb(p) for p in ps] for e, ps in generated.items()}, 10, 0, model=model)
    assert result["metrics"]["lpips"]["value"] == pytest.approx(direct["lpips"], rel=1e-6)
    assert result["metrics"]["lpips"]["pairs"] == direct["pairs"]  # all 3 pairs of 3 images

    clip, processor = load_clip(str(env["clip"]), "models.clip", torch.device("cpu"))
    reference: dict[str, list] = {}
    for rec in env["records"]:
        if len(reference.setdefault(rec["emotion"], [])) < 3:
            reference[rec["emotion"]].append(rec["image"])
    for e in ("amusement", "sadness"):
        g = clip_image_features(clip, processor, [load_rgb(p) for p in generated[e]]).normalized
        r = clip_image_features(clip, processor, [load_rgb(p) for p in reference[e]]).normalized
        expected = clip_i(g, r, "all_pairs")["clip_i"]
        assert result["metrics"]["clip_i"]["per_emotion"][e] == pytest.approx(expected, rel=1e-5)


def test_second_run_reuses_every_cache(env, first_eval):
    from emocli.commands.train import execute, load_for_command

    out, _ = first_eval
    before = json.loads((out / "metrics.json").read_text())
    cache_files = sorted((out / "cache").glob("*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in cache_files]
    recipe = load_for_command("eval-generation", ["tiny/eval-generation", f"data.samples={env['samples']}",
                                                  *env["overrides"], "data.max_reference_per_emotion=3",
                                                  f"run.output_dir={out}"])
    execute(recipe)
    after = json.loads((out / "metrics.json").read_text())
    assert all(c["computed"] == 0 and c["cached"] == 24 for c in after["cache"]["generated"].values())
    for status in after["cache"]["reference"].values():
        assert status["computed"] == [] and len(status["cached"]) == 8
    assert [p.stat().st_mtime_ns for p in cache_files] == mtimes  # nothing rewritten
    assert after["table1"] == pytest.approx(before["table1"], rel=1e-6)  # stats reloaded from .npz
    assert "features clip: 24 cached, 0 computed" in (out / "log.txt").read_text()


def test_identical_sets_give_fid_zero_and_unconfigured_metrics_are_skipped(env, tmp_path):
    """Generated = the reference images themselves (PNG copies of the test split): FID ~ 0. Weights left
    null: those metrics are skipped with a note in the report, not an error."""
    from emocli.commands.train import execute, load_for_command

    samples = _write_samples(tmp_path / "same", env["records"], 100, None, "test")
    out = tmp_path / "eval-same"
    recipe = load_for_command("eval-generation", [
        "tiny/eval-generation", f"data.samples={samples}", *env["overrides"], "data.reference_split=test",
        "data.emotions=[awe, fear]",
        "models.lpips_backbone=null", "models.lpips_heads=null", "models.scene_classifier=null",
        "models.object_classifier=null", "models.emotion_head=null", f"run.output_dir={out}"])
    execute(recipe)
    result = json.loads((out / "metrics.json").read_text())
    fid = result["metrics"]["fid"]
    assert abs(fid["value"]) < 1e-6 and all(abs(v) < 1e-6 for v in fid["per_emotion"].values())
    assert result["emotions"] == ["awe", "fear"] and set(fid["per_emotion"]) == {"awe", "fear"}
    assert result["counts"]["generated"] == result["counts"]["reference"]
    assert set(result["metrics"]) == {"fid", "sem_d", "clip_i", "clip_t"}
    assert set(result["skipped"]) == {"lpips", "emo_a", "sem_c"}
    assert "models.emotion_head" in result["skipped"]["emo_a"]
    report = (out / "report.md").read_text()
    assert "## Skipped" in report and "models.scene_classifier" in report
    assert "| eval-same (this run) | 0.00 [" in report  # FID 0, then its bootstrap interval


def test_compare_prints_both_runs(env, first_eval, tmp_path):
    import shutil

    out, _ = first_eval
    other = tmp_path / "eval-b"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("cache"))
    result = json.loads((other / "metrics.json").read_text())
    result["name"] = "eval-b"
    result["metrics"]["emo_a"]["value"] = result["table1"]["Emo-A"] = 0.5
    (other / "metrics.json").write_text(json.dumps(result))
    done = run_emo("eval", "generation", "--compare", str(out), str(other))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout and str(other) in done.stdout
    assert "eval-a" in done.stdout and "eval-b" in done.stdout
    # the per-image rows are the same, so the paired bootstrap finds no real difference in Emo-A
    emo_a = next(line for line in done.stdout.splitlines() if line.strip("│ ").startswith("Emo-A"))
    assert "n.s." in emo_a and "no paired test" in done.stdout  # FID has no units to pair
    for name in ("FID", "LPIPS", "Emo-A", "Sem-C", "Sem-D", "CLIP-I", "CLIP-T"):
        assert name in done.stdout
    assert "50.00%" in done.stdout
    bad = run_emo("eval", "generation", "--compare", str(out), str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "metrics.json" in bad.stderr


def test_missing_weights_file_is_one_line_exit_2(env, tmp_path):
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    done = run_emo("eval", "generation", "tiny/eval-generation", f"data.samples={env['samples']}", *env["overrides"],
                   f"models.inception={missing}", f"run.output_dir={tmp_path / 'r'}")
    assert done.returncode == 2
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and "models.inception" in lines[0] and str(missing) in lines[0]
    assert "Traceback" not in done.stderr


def test_metric_plan_auto_explicit_and_half_configured():
    from emocli.methods.eval_generation.evaluate import plan_metrics
    from emocli.recipes.load import load_recipe

    base = ["data.samples=s", "data.prepared=p"]
    plan, skipped = plan_metrics(load_recipe("tiny/eval-generation", base))
    assert plan == list(METRICS) and skipped == {}
    plan, skipped = plan_metrics(load_recipe("eval-generation", base))  # real recipe: only CLIP is a Hub id
    assert plan == ["sem_d", "clip_i", "clip_t"] and set(skipped) == {"fid", "lpips", "emo_a", "sem_c"}
    with pytest.raises(EmoError, match=r"FID is requested \(metrics.compute\) but models.inception is not set"):
        plan_metrics(load_recipe("eval-generation", [*base, "metrics.compute=[fid]"]))
    with pytest.raises(EmoError, match="models.lpips_backbone is set but models.lpips_heads is not"):
        plan_metrics(load_recipe("eval-generation", [*base, "models.lpips_backbone=a.pth"]))


def test_lowrank_fid_equals_frechet_distance():
    from emocli.methods.eval_generation.evaluate import frechet_to_features
    from emocli.metrics.fid import FeatureStats

    rng = np.random.default_rng(0)
    d = 96
    real = FeatureStats.from_features(rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) / np.sqrt(d))
    for n in (2, 10, 60):
        fake = rng.normal(size=(n, d)) * 1.3 + 0.2
        value, how = frechet_to_features(fake, real)
        assert how == "lowrank-exact"
        assert value == pytest.approx(FeatureStats.from_features(fake).fid(real, method="symmetric"), rel=1e-7)
    fake = rng.normal(size=(200, d))  # more images than dimensions: the library's symmetric form
    assert frechet_to_features(fake, real)[1] == "symmetric"
    same = rng.normal(size=(12, d))
    assert abs(frechet_to_features(same, FeatureStats.from_features(same))[0]) < 1e-6


def test_feature_cache_keys_on_path_and_mtime(tmp_path):
    from PIL import Image

    from emocli.evaluation.cache import FeatureCache, extract_features

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"im{i}.png")
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    calls = []

    def red(images):
        calls.append(len(images))
        return torch.tensor([[float(np.asarray(im)[0, 0, 0])] for im in images])

    def run(items, skip=False):
        cache = FeatureCache(tmp_path / "cache", "red", {"v": 1})
        return extract_features(items, {"red": cache}, {"red": red}, batch_size=2, skip_unreadable=skip)

    first = run(paths)
    assert first.counts["red"] == {"cached": 0, "computed": 3} and calls == [2, 1]
    assert first.features["red"][:, 0].tolist() == [0.0, 40.0, 80.0]
    again = run(paths[::-1])
    assert again.counts["red"] == {"cached": 3, "computed": 0} and calls == [2, 1]
    assert again.features["red"][:, 0].tolist() == [80.0, 40.0, 0.0]
    Image.new("RGB", (8, 8), (7, 0, 0)).save(paths[1])  # rewritten: new mtime/size -> recomputed
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    third = run(paths)
    assert third.counts["red"]["computed"] == 1 and third.features["red"][1, 0] == 7.0
    with pytest.raises(EmoError, match="bad.png"):
        run([*paths, tmp_path / "bad.png"])
    skipped = run([*paths, tmp_path / "bad.png"], skip=True)
    assert skipped.kept == [0, 1, 2] and "bad.png" in next(iter(skipped.unreadable))
    assert FeatureCache(tmp_path / "cache", "red", {"v": 2}).path != FeatureCache(tmp_path / "cache", "red", {"v": 1}).path


def test_eval_group_in_the_cli():
    done = run_emo("eval", "--help")
    assert done.returncode == 0 and "generation" in done.stdout and "tiny-weights" in done.stdout
    done = run_emo("eval", "generation", "tiny/eval-generation", "data.samples=s", "data.prepared=p", "--dry-run")
    assert done.returncode == 0 and "method: eval-generation" in done.stdout and "pairs_per_emotion: 10" in done.stdout
