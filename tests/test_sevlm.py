"""SEVLM: ArtEmis data, the model's boundary / causality / losses, training, explain and eval end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from emocli.errors import EmoError
from tests.conftest import ROOT, run_emo

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny models: threads only add contention


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Tiny CLIP + GPT-2, a synthetic ArtEmis (one corrupt, one missing image) and its prepared folder."""
    from emocli.data.artemis import prepare_artemis
    from emocli.data.artemis_synth import synth_artemis
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("sevlm")
    make_tiny(root / "models" / "tiny", which=("clip", "gpt2"))
    synth_artemis(root / "data" / "artemis-tiny", n=362, seed=0, corrupt=1, missing=1)
    prepare_artemis(root / "data" / "artemis-tiny" / "artemis_preprocessed.csv",
                    root / "data" / "artemis-tiny" / "wikiart", root / "data" / "artemis-tiny-prepared")
    return root


# ------------------------------------------------------------------------------------------------ data


def test_prepare_keeps_splits_and_writes_every_artifact(workspace):
    prepared = workspace / "data" / "artemis-tiny-prepared"
    manifest = json.loads((prepared / "prepare.json").read_text())
    assert manifest["source_format"] == "preprocessed"
    assert manifest["missing_image_count"] == 1 and manifest["corrupt_image_count"] == 1
    assert manifest["missing_images"][0].endswith(".jpg")
    assert Path(next(iter(manifest["corrupt_images"]))).is_file()  # named by path
    with (workspace / "data" / "artemis-tiny" / "artemis_preprocessed.csv").open() as f:
        split_of = {(r["art_style"], r["painting"]): r["split"] for r in csv.DictReader(f)}
    total = 0
    for split in ("train", "val", "test"):
        rows = [json.loads(line) for line in (prepared / f"{split}.jsonl").read_text().splitlines()]
        total += len(rows)
        for row in rows:
            assert split_of[(row["art_style"], row["painting"])] == split  # the CSV's split column is kept
            assert sum(row["emotion_histogram"]) == len(row["emotions"]) == len(row["explanations"]) == 5
            assert abs(sum(row["emotion_distribution"]) - 1) < 1e-9
    assert total == 362 - 2
    accented = [json.loads(line) for s in ("train", "val", "test")
                for line in (prepared / f"{s}.jsonl").read_text().splitlines() if "cafe\u0301" in line]
    assert len(accented) == 1 and "#U0301" in accented[0]["image"]  # combining accent resolved on disk
    contrastive = [json.loads(line) for line in (prepared / "train_contrastive.jsonl").read_text().splitlines()]
    assert contrastive and all(len(set(r["emotions"])) >= 2 for r in contrastive)
    coco = json.loads((prepared / "coco" / "test_references.json").read_text())
    assert coco["type"] == "captions" and len(coco["annotations"]) == 5 * len(coco["images"])
    with (prepared / "image-emotion-histogram.csv").open() as f:
        assert next(csv.reader(f)) == ["art_style", "painting", "emotion_histogram"]


def test_prepare_release_csv_splits_by_artwork(workspace, tmp_path):
    from emocli.data.artemis import prepare_artemis

    out = prepare_artemis(workspace / "data" / "artemis-tiny" / "artemis_dataset_release_v0.csv",
                          workspace / "data" / "artemis-tiny" / "wikiart", tmp_path / "raw", seed=2021)
    counts = json.loads((out / "prepare.json").read_text())["counts"]["artworks"]
    assert counts["train"] > counts["test"] > counts["val"] > 0  # 85/5/10 by artwork
    assert json.loads((out / "prepare.json").read_text())["rules"]["min_tokens"] == 5
    from typer.testing import CliRunner

    from emocli.cli import app

    result = CliRunner().invoke(app, ["data", "stats", str(out)])
    assert result.exit_code == 0 and "contrastive train artworks" in result.output


def test_bad_data_inputs_are_one_line_errors(workspace, tmp_path):
    lexicon = workspace / "data" / "artemis-tiny" / "synthetic-vad-lexicon.txt"
    images = workspace / "data" / "artemis-tiny" / "wikiart"
    result = run_emo("data", "prepare", "artemis", "--source", str(lexicon), "--images", str(images),
                     "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "lacks ArtEmis's column(s)" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    csv_path = workspace / "data" / "artemis-tiny" / "artemis_preprocessed.csv"
    result = run_emo("data", "prepare", "artemis", "--source", str(csv_path), "--images", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "--images" in result.stderr and "not a folder" in result.stderr
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------- lexicon


def test_lexicon_rescales_v1_and_rejects_other_layouts(tmp_path):
    from emocli.methods.sevlm.vad import read_lexicon

    good = tmp_path / "nrc.txt"
    good.write_text("Word\tValence\tArousal\tDominance\nhappy\t1.000\t0.735\t0.772\nsad\t0.052\t0.288\t0.164\n")
    lexicon = read_lexicon(good)
    assert lexicon["happy"] == pytest.approx((1.0, 0.47, 0.544))  # [0, 1] -> [-1, 1]
    bad = tmp_path / "bad.txt"
    bad.write_text("happy,1.0,0.7,0.7\n")
    with pytest.raises(EmoError, match=r"line 1 .*expected word<TAB>valence"):
        read_lexicon(bad)


def test_token_vad_uses_lemmas(workspace):
    from emocli.methods.sevlm.model import build_pipeline
    from emocli.methods.sevlm.vad import read_lexicon

    lexicon = read_lexicon(workspace / "data" / "artemis-tiny" / "synthetic-vad-lexicon.txt")
    models = workspace / "models" / "tiny"
    pipe = build_pipeline(str(models / "clip"), None, str(models / "gpt2"), None, None, lexicon, image_size=32)
    tok = pipe.tokenizer
    looks = tok.encode(" looks")
    if len(looks) == 1:  # "looks" is not in the lexicon; its lemma "look" is
        assert torch.allclose(pipe.model.token_vad[looks[0]], torch.tensor(lexicon["look"]))
    assert (pipe.model.token_vad[tok.convert_tokens_to_ids("<pad>")] == 0).all()


# ----------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def pipeline(workspace):
    from emocli.methods.sevlm.model import build_pipeline
    from emocli.methods.sevlm.vad import read_lexicon

    models = workspace / "models" / "tiny"
    lexicon = read_lexicon(workspace / "data" / "artemis-tiny" / "synthetic-vad-lexicon.txt")
    torch.manual_seed(0)
    return build_pipeline(str(models / "clip"), None, str(models / "gpt2"), None, None, lexicon, image_size=32)


def test_boundary_follows_because_for_a_two_token_emotion(pipeline):
    layout, tok = pipeline.layout, pipeline.tokenizer
    assert len(tok.encode(" something else")) >= 2 and len(tok.encode(" awe")) < len(tok.encode(" something else"))
    explanation = "the sky looks strange to me"
    for emotion in ("awe", "something else"):
        seq = layout.encode(emotion, explanation)
        batch = layout.batch([seq, layout.encode("awe", "x")], length=30)
        start = int(batch["explanation_start"][0])
        because = start - len(layout.because)
        assert tok.decode(seq[len(layout.prompt):because]).strip() == emotion
        assert tok.decode(seq[because:start]).strip() == "because"
        assert tok.decode(seq[start:-1]).strip() == explanation
        segments = batch["segment_ids"][0]
        assert (segments[:because] == layout.emotion_segment).all()
        assert (segments[because:] == layout.explanation_segment).all()
    assert layout.split_text("something else because the sky looks strange") == (
        "something else", "the sky looks strange")


def test_vad_encoder_is_causal(pipeline):
    encoder = pipeline.model.vad_encoder.eval()
    torch.manual_seed(0)
    vad = torch.randn(2, 12, 3)
    changed = vad.clone()
    changed[:, 7:] = torch.randn(2, 5, 3)  # only positions 7.. differ
    with torch.no_grad():
        a, b = encoder(vad), encoder(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_losses_and_switchable_heads(pipeline, workspace):
    from emocli.methods.sevlm.model import SevlmConfig, SevlmModel

    layout = pipeline.layout
    emotions = ["awe", "fear", "something else", "sadness"]
    batch = layout.batch([layout.encode(e, "the sky looks gloomy and sad") for e in emotions])
    image_tokens = torch.randn(4, 16, 32)
    weights = {"lm": 1.0, "vad": 1.0, "contrastive": 1.0}
    loss, logs = pipeline.model(image_tokens, batch, weights)
    assert set(logs) == {"loss_lm", "loss_vad", "loss_contrastive"} and torch.isfinite(loss)
    assert logs["loss_contrastive"] == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=0.3)
    loss.backward()
    assert pipeline.model.vad_encoder.positions.weight.grad is not None
    pipeline.model.zero_grad()
    config = SevlmConfig(**{**pipeline.config.__dict__, "vad_fusion": False, "vad_head": False,
                            "contrastive_head": False})
    plain = SevlmModel(config)
    assert not hasattr(plain, "vad_encoder") and plain.vad_head is None and plain.contrastive_head is None
    _, logs = plain(image_tokens, batch, weights)
    assert set(logs) == {"loss_lm"}


def test_only_the_explanation_is_scored():
    from emocli.methods.sevlm.evaluate import explanation_metrics

    artwork = {"image_id": "1", "emotion_histogram": [0, 5, 0, 0, 0, 0, 0, 0, 0],
               "explanations": ["the sky is so vast and grand"]}
    results = [{"artwork": artwork, "text": "awe because the sky is so vast and grand", "emotion": "awe",
                "explanation": "the sky is so vast and grand"}]
    scores = explanation_metrics(results, meteor=False, ptb=False)
    assert scores["BLEU-4"] == pytest.approx(1.0, rel=1e-6)  # "awe because" would have lowered it
    assert scores["Unique"] == 1.0 and scores["Metaphor"] == 0.0


# ------------------------------------------------------------------------------- training end to end


def _recipe_args(workspace, *extra):
    return ["tiny/sevlm", f"model.vision={workspace}/models/tiny/clip", f"model.decoder={workspace}/models/tiny/gpt2",
            f"model.vad_lexicon={workspace}/data/artemis-tiny/synthetic-vad-lexicon.txt",
            f"data.prepared={workspace}/data/artemis-tiny-prepared", *extra]


@pytest.fixture(scope="module")
def trained(workspace):
    """A short run of the tiny recipe (8 steps; evaluation and export at the end)."""
    run_dir = workspace / "runs" / "tiny-sevlm"
    result = run_emo("train", "sevlm", *_recipe_args(workspace, f"run.output_dir={run_dir}", "train.max_steps=8",
                                                    "train.log_every=2"), cwd=workspace, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_tiny_training_logs_each_head_and_exports(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert all(k in r for r in steps for k in ("loss_lm", "loss_vad", "loss_contrastive"))
    assert steps[-1]["loss_lm"] < steps[0]["loss_lm"]
    evals = [r["eval"] for r in records if "eval" in r]
    assert evals and {"emotion_accuracy", "bleu4"} <= set(evals[-1])
    for name in ("final", "best", "best-bleu4"):
        assert (trained / name / "model" / "sevlm.json").is_file()


@pytest.mark.slow
def test_heldout_emotion_accuracy_beats_the_majority_class(workspace):
    """The whole tiny recipe (~150 steps); RUN/best/model (by validation accuracy) on the test split."""
    from collections import Counter

    from emocli.data.artemis import PreparedArtEmis, majority_emotion
    from emocli.methods.sevlm.model import SevlmPipeline
    from emocli.methods.sevlm.train import emotion_accuracy, explain_artworks

    run_dir = workspace / "runs" / "tiny-sevlm-full"
    result = run_emo("train", "sevlm", *_recipe_args(workspace, f"run.output_dir={run_dir}"), cwd=workspace,
                     env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    data = PreparedArtEmis(workspace / "data" / "artemis-tiny-prepared")
    test = data.artworks("test")
    # the best constant answer on the test split itself (an upper bound for any majority-class baseline)
    majority_baseline = Counter(majority_emotion(a["emotion_histogram"]) for a in test).most_common(1)[0][1] / len(test)
    pipe = SevlmPipeline.from_pretrained(run_dir / "best" / "model")
    accuracy, scored = emotion_accuracy(explain_artworks(pipe, test, 32, {"max_new_tokens": 8}, []))
    print(f"held-out emotion accuracy {accuracy:.3f} on {scored} artworks; majority class {majority_baseline:.3f}")
    assert scored >= 30
    assert accuracy > majority_baseline, (accuracy, majority_baseline)


def test_explain_and_eval_end_to_end(trained, workspace, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emocli.cli import app

    monkeypatch.chdir(workspace)  # in-process (saves three interpreter starts); torch is already imported
    runner = CliRunner()
    image = next((workspace / "data" / "artemis-tiny" / "wikiart" / "Baroque").glob("*.jpg"))
    result = runner.invoke(app, ["understand", "explain", "--run", str(trained), "--image", str(image)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("emotion: ") and "explanation: " in result.stdout
    folder = tmp_path / "images"
    shutil.copytree(workspace / "data" / "artemis-tiny" / "wikiart" / "Cubism", folder)
    result = runner.invoke(app, ["understand", "explain", "--run", str(trained), "--images", str(folder), "--sample"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (folder / "explanations.jsonl").read_text().splitlines()]
    assert lines and {"image", "text", "emotion", "explanation"} <= set(lines[0])
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "explanation", "tiny/eval-explanation", f"model.run={trained}",
                                 f"data.prepared={workspace}/data/artemis-tiny-prepared", f"run.output_dir={out}"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("emotion_accuracy", "BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "sacreBLEU", "Unique", "Metaphor"):
        assert key in metrics
    report = (out / "report.md").read_text()
    assert "third-party" in report and "SPICE" in report and (out / "report.html").is_file()


def test_bad_model_inputs_are_one_line_errors(workspace, tmp_path):
    bad_lexicon = tmp_path / "lexicon.csv"
    bad_lexicon.write_text("word,valence\nhappy,1\n")
    result = run_emo("train", "sevlm", *_recipe_args(workspace, f"model.vad_lexicon={bad_lexicon}",
                                                    f"run.output_dir={tmp_path / 'run'}"), cwd=workspace)
    assert result.returncode == 2 and "expected word<TAB>valence" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "recipe.yaml").write_text("method: emogen\n")
    image = next((workspace / "data" / "artemis-tiny" / "wikiart" / "Baroque").glob("*.jpg"))
    result = run_emo("understand", "explain", "--run", str(other), "--image", str(image))
    assert result.returncode == 2 and "not a SEVLM run" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(EmoError, match="exactly one of --image PATH or --images DIR"):
        from emocli.commands.understand import explain

        explain(run=other, image=image, images=image.parent, out=None, weights="best", sample=False, top_p=0.9,
                temperature=1.0, max_new_tokens=4, batch_size=1, seed=0, device="cpu")


def test_recipes_validate():
    from emocli.recipes.load import load_recipe

    real = load_recipe("sevlm")
    assert (real.train.batch_size, real.optim.lr, real.optim.vad_lr, real.train.epochs) == (32, 2e-5, 4e-5, 35)
    assert real.model.max_length == 30 and real.optim.scheduler == "linear" and real.optim.weight_decay == 0
    assert load_recipe("eval-explanation").data.split == "test"
    with pytest.raises(EmoError, match="vad_lexicon"):
        load_recipe("sevlm", ["model.vad_lexicon=null"])


@pytest.mark.slow
def test_full_size_architecture_two_steps(tmp_path, workspace):
    """The real recipe with CLIP ViT-B/16 + distilgpt2 shapes and random weights, 2 steps. The batch is cut to
    2 artworks (4 sequences, enough for the contrastive head's two negatives) to stay under ~3 GB on a CPU."""
    out = tmp_path / "run"
    vision = "{hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, " \
             "image_size: 224, patch_size: 16}"
    decoder = "{n_layer: 6, n_embd: 768, n_head: 12, n_positions: 1024, vocab_size: 50257}"
    result = run_emo("train", "sevlm", "sevlm", "model.vision=null", f"model.vision_config={vision}",
                     "model.decoder=null", f"model.decoder_config={decoder}",
                     f"model.tokenizer={workspace}/models/tiny/gpt2",
                     f"model.vad_lexicon={workspace}/data/artemis-tiny/synthetic-vad-lexicon.txt",
                     f"data.prepared={workspace}/data/artemis-tiny-prepared", "data.max_eval_images=4",
                     "launch.mixed_precision=no", "train.max_steps=2", "train.num_workers=0", "train.batch_size=2",
                     f"run.output_dir={out}", cwd=ROOT, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("step") == 2 and "loss_contrastive" in r for r in records)
