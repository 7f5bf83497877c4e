"""EmoGen reproduction fidelity (issue 9): cross-fitted emotion scores, the paper-scale recipes' defaults,
EmoCLIP's fp32 export, Table 1's Stable Diffusion row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emocli.recipes.load import load_recipe


@pytest.fixture(scope="module")
def classifier_env(emoset_tiny, tmp_path_factory):
    """A prepared synthetic EmoSet and an `emo train emotion-classifier` run with 3 cross-fitting folds."""
    from emocli.commands.train import execute
    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("fidelity")
    prepared = Path(prepare_emoset(str(emoset_tiny), root / "prepared"))
    clip = make_tiny(root / "models", which=("clip",))["clip"]
    run = root / "classifier"
    execute(load_recipe("tiny/emotion-classifier", [f"data.prepared={prepared}", f"model.clip={clip}",
                                                    f"run.output_dir={run}", "data.cross_fit_folds=3",
                                                    "train.epochs=10"]))
    return {"root": root, "prepared": prepared, "clip": clip, "run": run}


def _clip_features(clip, paths):
    from transformers import CLIPModel, CLIPProcessor

    from emocli.data.emoset import load_rgb

    model, processor = CLIPModel.from_pretrained(clip).eval(), CLIPProcessor.from_pretrained(clip)
    with torch.no_grad():
        out = model.get_image_features(**processor(images=[load_rgb(p) for p in paths], return_tensors="pt"))
    return out.pooler_output if hasattr(out, "pooler_output") else out


def test_alpha_scores_come_from_heads_that_never_saw_the_image(classifier_env):
    from emocli.data.alpha import compute_alpha
    from emocli.methods.emotion_classifier.head import load_emotion_head

    env = classifier_env
    cross = env["run"] / "final" / "cross_fit"
    folds = json.loads((cross / "folds.json").read_text())
    assert folds["folds"] == 3 and sorted(set(folds["assignment"].values())) == [0, 1, 2]

    alpha = json.loads(compute_alpha(env["prepared"], classifier=env["run"]).read_text())
    assert alpha["method"] == "emotion-classifier" and alpha["scoring"] == "cross-fit"
    scores = {s["id"]: s for s in map(json.loads, (env["prepared"] / "emotion_scores.jsonl").read_text().splitlines())}
    records = [json.loads(x) for x in (env["prepared"] / "records.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(scores) == len(train)
    # reference: each training image through its own fold's head, on independently computed CLIP features
    features = _clip_features(env["clip"], [r["image"] for r in train])
    heads = {f: load_emotion_head(cross / f"fold-{f}", "t")[0] for f in range(3)}
    main = load_emotion_head(env["run"], "t")[0]
    differs = 0
    for row, record in enumerate(train):
        fold = folds["assignment"][str(Path(record["image"]).resolve())]
        with torch.no_grad():
            expected = torch.softmax(heads[fold](features[row:row + 1]), -1)[0].numpy()
            in_sample = torch.softmax(main(features[row:row + 1]), -1)[0].numpy()
        label = record["label"]
        assert scores[record["id"]]["label_prob"] == pytest.approx(float(expected[label]), abs=1e-5)
        differs += not np.allclose(expected, in_sample, atol=1e-4)
    assert differs > len(train) // 2

    # the fold heads really left their fold out: fold f's head trained without fold f's images
    from emocli.methods.emotion_classifier.crossfit import fold_assignment

    paths = [r["image"] for r in train]
    assert fold_assignment(paths, 3, folds["seed"]) == folds["assignment"]

    alpha = json.loads(compute_alpha(env["prepared"], classifier=env["run"], scoring="in-sample").read_text())
    assert alpha["scoring"] == "in-sample"
    first = json.loads((env["prepared"] / "emotion_scores.jsonl").read_text().splitlines()[0])
    with torch.no_grad():
        expected = torch.softmax(main(features[:1]), -1)[0].numpy()
    assert first["score"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_classifier_without_folds_needs_in_sample_scoring(classifier_env, tmp_path):
    import shutil

    from emocli.data.alpha import compute_alpha
    from emocli.errors import EmoError

    run = tmp_path / "no-folds"
    shutil.copytree(classifier_env["run"], run)
    shutil.rmtree(run / "final" / "cross_fit")
    with pytest.raises(EmoError, match="data.cross_fit_folds"):
        compute_alpha(classifier_env["prepared"], classifier=run)


# --- the paper-scale recipes -------------------------------------------------------------------------

def test_paper_recipe_reads_the_released_vocabulary_and_alpha():
    recipe = load_recipe("emogen", [])
    assert recipe.data.alpha == "data/emogen-official/alpha.json"
    assert recipe.data.attribute_vocab == "data/emogen-official/attribute_vocab.json"
    assert recipe.loss.pooled_token == "placeholder" and recipe.loss.attr_text == "raw"
    assert recipe.train.clip_grad_norm is None  # the original never clips the mapper's gradient
    assert recipe.model.text_encoder_gradient_checkpointing and recipe.model.gradient_checkpointing


def test_paper_recipe_header_states_its_peak_memory():
    from emocli.recipes.load import find_recipe

    text = find_recipe("emogen").read_text()
    assert "peak memory" in text.lower() and "estimate" in text.lower()


def test_emoclip_recipe_reaches_the_forks_effective_batch():
    recipe = load_recipe("emoclip", [])
    processes = recipe.launch.num_processes
    assert processes * recipe.train.batch_size * recipe.train.grad_accum == 8 * 128 * 4
    assert recipe.train.batch_size == 128  # the fork's in-batch contrastive pool per process


def test_emoclip_exports_fp32_weights(emoset_tiny, tmp_path):
    from transformers import CLIPModel, CLIPTextModel

    from emocli.data.prepare import prepare_emoset
    from emocli.methods.emoclip.train import EmoClipTask
    from emocli.runs import prepare_run
    from emocli.testing.tiny import make_tiny

    clip = make_tiny(tmp_path / "models", which=("clip",))["clip"]
    prepared = prepare_emoset(str(emoset_tiny), tmp_path / "prepared")
    recipe = load_recipe("tiny/emoclip", [f"model.pretrained={clip}", f"data.prepared={prepared}",
                                          f"run.output_dir={tmp_path / 'run'}"])
    task = EmoClipTask(recipe, prepare_run(recipe, ["t"]))
    # what setup() does under fp16 / bf16 mixed precision: the frozen vision side in half precision
    task.clip.vision_model.to(torch.float16)
    task.clip.visual_projection.to(torch.float16)
    task.save_pretrained(task.model, tmp_path / "export" / "model")
    for folder, cls in ((tmp_path / "export" / "model", CLIPModel), (tmp_path / "export" / "text_encoder", CLIPTextModel)):
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes == {"F32"}, (folder, dtypes)
        cls.from_pretrained(folder)
    assert task.clip.vision_model.embeddings.patch_embedding.weight.dtype == torch.float16  # training copy untouched


# --- Table 1's Stable Diffusion row ----------------------------------------------------------------------

def test_stable_diffusion_baseline_writes_the_eval_layout(tmp_path):
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    from emocli.methods.emogen.sample import make_sampler
    from emocli.samples import read_samples
    from emocli.testing.tiny import make_tiny

    sd = make_tiny(tmp_path / "models", which=("sd",))["sd"]
    sampler, defaults = make_sampler(sd=str(sd), baseline=True)
    assert defaults["steps"] == 50 and defaults["guidance"] == 7.5 and defaults["scheduler"] == "unipc"
    out = tmp_path / "sd"
    from typer.testing import CliRunner

    from emocli.cli import app
    from emocli.progress import setup_logging

    for extra in (["--emotion", "fear", "--object", "cup"], ["--emotion", "awe"]):
        done = CliRunner().invoke(app, ["sample", "--baseline", "--sd", str(sd), "--n", "2", "--seed", "4",
                                        "--steps", "3", "--guidance", "5", "--out", str(out), *extra])
        setup_logging(None, main_process=False)
        assert done.exit_code == 0, (done.output[-2000:], done.exception)
    found = read_samples(out)
    assert sorted(found) == ["awe", "fear"] and all(len(v) == 2 for v in found.values())
    side = json.loads((out / "fear" / "fear_0001.json").read_text())
    assert side["prompt"] == "an image of fear cup" and side["method"] == "stable-diffusion"
    assert side["latent_seed"] == 5
    assert json.loads((out / "awe" / "awe_0000.json").read_text())["prompt"] == "an image of awe"

    # the same images as diffusers' own pipeline given the paper's prompt
    ref = StableDiffusionPipeline.from_pretrained(str(sd), safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    ref.scheduler = UniPCMultistepScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    theirs = ref(["an image of awe"] * 2, num_inference_steps=3, guidance_scale=5.0,
                 generator=[torch.Generator().manual_seed(4), torch.Generator().manual_seed(5)]).images
    from PIL import Image

    for i, image in enumerate(theirs):
        assert np.array_equal(np.asarray(Image.open(out / "awe" / f"awe_{i:04d}.png")), np.asarray(image))

    from emocli.errors import EmoError

    with pytest.raises(EmoError, match="--baseline"):
        make_sampler(sd=str(sd), baseline=True, mapper=tmp_path)
