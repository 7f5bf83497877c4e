"""Text-conditional LDM (seed 004): caption data, training on tiny models, resume, auxiliary losses, caches,
the diffusers pipeline export and `emo sample --run LDM_RUN --prompt`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emocli.errors import EmoError
from emocli.recipes.load import load_recipe
from emocli.runs import prepare_run
from tests.conftest import run_emo

# --- data -------------------------------------------------------------------------------------------


def test_prepare_captions_names_bad_images_and_splits(tmp_path):
    from emocli.data.captions import PreparedCaptions, prepare_captions, synth_captions

    src = synth_captions(tmp_path / "src", n=12, seed=1, corrupt=2, missing=1)
    out = prepare_captions(src, tmp_path / "prep", test_fraction=0.25, seed=3)
    m = json.loads((out / "prepare.json").read_text())
    assert m["dataset"] == "captions" and m["counts"]["total"] == 12
    assert m["counts"]["per_split"] == {"train": 9, "test": 3}
    assert m["bad_image_count"] == 3
    assert sorted(Path(p).name for p in m["bad_images"]) == ["corrupt_000.png", "corrupt_001.png", "missing_000.png"]
    assert "file not found" in m["bad_image_reasons"][str(src / "images" / "missing_000.png")]
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"id", "image", "captions"} and not Path(rows[0]["image"]).is_absolute()
    assert (out / rows[0]["image"]).is_file()
    train = PreparedCaptions(out).records("train")
    assert len(train) == 9 and not {r["id"] for r in train} & {r["id"] for r in rows}
    # The captions say what the image shows: the shape's colour is the image's centre colour.
    from PIL import Image

    from emocli.data.captions import SYNTH_COLOURS

    first = train[0]
    colour = first["captions"][0].split()[1]
    centre = Image.open(first["image"]).convert("RGB").getpixel((32, 32))
    assert np.abs(np.array(centre) - np.array(SYNTH_COLOURS[colour])).max() < 8


def test_prepare_captions_table_sources(tmp_path):
    from emocli.data.captions import PreparedCaptions, prepare_captions, synth_captions

    src = synth_captions(tmp_path / "src", n=6, seed=0)
    info = json.loads((src / "train_info.json").read_text())
    # an imagefolder: metadata.jsonl with file_name + text, one caption a row
    (src / "metadata.jsonl").write_text("".join(json.dumps({"file_name": k, "text": v[0]}) + "\n"
                                                for k, v in info.items()))
    (src / "train_info.json").unlink()
    out = prepare_captions(src, tmp_path / "folder", test_fraction=0.0)
    recs = PreparedCaptions(out).records("train")
    assert len(recs) == 6 and all(len(r["captions"]) == 1 for r in recs)
    # a CSV with a split column and JSON-list caption cells
    csv = tmp_path / "captions.csv"
    lines = ["image,captions,split"] + [f"src/{k},\"{json.dumps(v).replace(chr(34), chr(34) * 2)}\","
                                        f"{'test' if i < 2 else 'train'}" for i, (k, v) in enumerate(info.items())]
    csv.write_text("\n".join(lines) + "\n")
    out = prepare_captions(csv, tmp_path / "csv")
    m = json.loads((out / "prepare.json").read_text())
    assert m["counts"]["per_split"] == {"train": 4, "test": 2} and m["test_from_source"]
    assert PreparedCaptions(out).records("test")[0]["captions"] == list(info.values())[0]


def test_prepare_captions_bad_input_writes_nothing(tmp_path):
    from emocli.data.captions import prepare_captions

    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "train_info.json").write_text(json.dumps({"a.png": "a cat", "b.png": ["a dog"]}))
    r = run_emo("data", "prepare", "captions", "--source", str(tmp_path / "gone"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no usable captioned image" in r.stderr and "a.png" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train_info.json").write_text("{}")
    with pytest.raises(EmoError, match="empty caption set"):
        prepare_captions(tmp_path / "empty", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_sample_prompt_file_that_does_not_exist(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "ldm.json").write_text("{}")
    r = run_emo("sample", "--run", str(run), "--prompts", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "nope.txt does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
    r = run_emo("sample", "--run", str(run), "--emotion", "fear", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "LDM run" in r.stderr


# --- training -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ldm_dirs(tmp_path_factory):
    from emocli.data.captions import prepare_captions, synth_captions
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("ldm")
    models = make_tiny(root / "models", which=("sd", "clip"))
    prepared = prepare_captions(synth_captions(root / "src", n=16, seed=0), root / "prepared", test_fraction=0.25)
    return {"root": root, "models": models, "prepared": prepared}


def _recipe(d, out, *overrides):
    return load_recipe("tiny/ldm", [
        f"model.text_encoder={d['models']['clip']}", f"model.vae={d['models']['sd']}", f"data.prepared={d['prepared']}",
        f"run.output_dir={out}", "train.batch_size=4", "train.log_every=1", "validation.steps=2",
        "validation.images_per_prompt=1", *overrides])


def _task(d, name, *overrides):
    from accelerate import Accelerator

    from emocli.methods.ldm.train import LdmTask

    recipe = _recipe(d, d["root"] / name, *overrides)
    task = LdmTask(recipe, prepare_run(recipe, ["test"]))
    task.setup(Accelerator(cpu=True))
    return task


def _batch(task, n=4):
    return torch.utils.data.default_collate([task.train_dataset[i] for i in range(n)])


@pytest.fixture(scope="module")
def trained(ldm_dirs):
    """4 steps straight, and 2 steps + resume to 4 (checkpoint every 2), EMA with warm-up on."""
    from emocli.worker import run_method

    out = {}
    for name, plan in (("four", [4]), ("resumed", [2, 4])):
        for i, steps in enumerate(plan):
            recipe = _recipe(ldm_dirs, ldm_dirs["root"] / name, f"train.max_steps={steps}", "train.checkpoint_every=2",
                             "train.eval_every=4")
            run_method(prepare_run(recipe, ["test"], resume=i > 0).dir, i > 0)
        out[name] = ldm_dirs["root"] / name
    return out


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_equals_straight_run_with_ema(trained):
    a, b = trained["four"] / "checkpoints" / "step-4", trained["resumed"] / "checkpoints" / "step-4"
    for rel in ("model/unet/diffusion_pytorch_model.safetensors", "ema.safetensors"):
        ta, tb = _tensors(a / rel), _tensors(b / rel)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), rel
    raw, ema = _tensors(a / "model/unet/diffusion_pytorch_model.safetensors"), _tensors(a / "ema.safetensors")
    assert any(not torch.equal(raw[k], ema[k]) for k in ema)  # the EMA is a different set of weights
    # final/model holds the exported EMA weights; the raw ones are beside them
    final = _tensors(trained["four"] / "final/model/unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(final[k], ema[k]) for k in ema)
    beside = _tensors(trained["four"] / "final/unet_raw/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(beside[k], raw[k]) for k in raw)
    assert list((trained["four"] / "samples").glob("step-*.png"))  # the validation grid


def test_training_lowers_the_loss(ldm_dirs, trained):
    from diffusers import UNet2DConditionModel

    task = _task(ldm_dirs, "probe", "data.caption_dropout=0.0")
    batch = _batch(task, 8)
    losses = []
    for unet in (task.model, UNet2DConditionModel.from_pretrained(trained["four"] / "final" / "unet_raw")):
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(task.loss(unet.eval(), batch)[0].item())
    assert losses[1] < 0.8 * losses[0], losses


def test_pipeline_folder_equals_emo_sample(trained, tmp_path):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from PIL import Image

    from emocli.methods.ldm.sample import sample_run

    run = trained["four"]
    prompts = ["a red circle on a blue background", "a green square on a white background"]
    n = sample_run(run, prompts, None, tmp_path / "s", n=2, seed=7, steps=3, guidance=3.0, scheduler="dpm++",
                   device="cpu", dtype=torch.float32)
    assert n == 4 and (tmp_path / "s" / "grid.png").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(str(run / "final" / "model"))
    assert pipe.safety_checker is None and isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    jobs = [(p, k) for p in prompts for k in range(2)]
    images = pipe([p for p, _ in jobs], num_inference_steps=3, guidance_scale=3.0,
                  generator=[torch.Generator().manual_seed(7 + j) for j in range(4)]).images
    for j, ((p, k), image) in enumerate(zip(jobs, images)):
        name = f"{prompts.index(p):05d}_{k:02d}"
        ours = Image.open(tmp_path / "s" / "prompts" / f"{name}.png")
        assert np.array_equal(np.asarray(ours), np.asarray(image)), name
        sidecar = json.loads((tmp_path / "s" / "prompts" / f"{name}.json").read_text())
        assert sidecar["prompt"] == p and sidecar["latent_seed"] == 7 + j and sidecar["reference_id"] is None


def test_sampling_the_test_split_names_reference_ids(ldm_dirs, trained, tmp_path):
    from emocli.data.captions import PreparedCaptions
    from emocli.methods.ldm.sample import read_prompts

    items = read_prompts(["extra prompt"], ldm_dirs["prepared"])
    test = PreparedCaptions(ldm_dirs["prepared"]).records("test")
    assert [i["reference_id"] for i in items] == [None] + [r["id"] for r in test]
    assert [i["prompt"] for i in items[1:]] == [r["captions"][0] for r in test]


# --- the loss ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_files(ldm_dirs):
    """Random AlexNet + head weights in the files' real layouts (what loss.lpips_* name)."""
    from safetensors.torch import save_file

    from emocli.metrics.lpips import LPIPS

    torch.manual_seed(0)
    metric = LPIPS()
    backbone, heads = ldm_dirs["root"] / "alexnet.safetensors", ldm_dirs["root"] / "alex.safetensors"
    save_file({k: v.contiguous() for k, v in metric.net.state_dict().items()}, str(backbone))
    save_file({f"lin{k}.model.1.weight": torch.rand_like(h.model[1].weight) for k, h in enumerate(metric.heads)},
              str(heads))
    return backbone, heads


def test_auxiliary_losses_start_at_their_epoch(ldm_dirs, lpips_files):
    from emocli.methods.ldm.train import latent_kl

    task = _task(ldm_dirs, "aux", "loss.lpips_weight=0.1", "loss.lpips_from_epoch=2", "loss.kl_weight=0.01",
                 "loss.kl_from_epoch=3", f"loss.lpips_backbone={lpips_files[0]}",
                 f"loss.lpips_heads={lpips_files[1]}")
    batch = _batch(task)
    results = {}
    for epoch in (1, 2, 3):
        task.epoch = epoch
        torch.manual_seed(0)
        loss, logs = task.loss(task.model, batch)
        results[epoch] = (loss.item(), logs)
    assert "loss_lpips" not in results[1][1] and "loss_kl" not in results[1][1]
    assert results[1][0] == pytest.approx(results[1][1]["loss_mse"])
    assert "loss_lpips" in results[2][1] and "loss_kl" not in results[2][1]
    lp = results[2][1]["loss_lpips"]
    assert lp > 0 and results[2][0] == pytest.approx(results[1][0] + 0.1 * lp, rel=1e-5)
    kl = results[3][1]["loss_kl"]
    assert kl > 0 and results[3][0] == pytest.approx(results[1][0] + 0.1 * lp + 0.01 * kl, rel=1e-5)
    # The KL term pushes gradients into the UNet (it can change training) ...
    task.model.zero_grad()
    x0 = task.model(torch.randn(2, 4, 16, 16), torch.tensor([10, 500]),
                    encoder_hidden_states=torch.randn(2, 77, 32)).sample
    latent_kl(x0, torch.randn(2, 4, 16, 16)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    # ... and is the closed-form Gaussian KL: N(1, 4) || N(0, 1) per channel = 0.5 * (4 + 1 - 1 - ln 4)
    p = torch.tensor([-1.0, 3.0]).view(2, 1, 1, 1).expand(2, 4, 2, 2).clone()  # every channel: mean 1, var 4
    q = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 4, 2, 2).clone()  # every channel: mean 0, var 1
    assert latent_kl(p, q, eps=0).item() == pytest.approx(0.5 * (4 + 1 - 1 - np.log(4)), rel=1e-6)


def test_cached_latents_and_text_match_online(ldm_dirs):
    online = _task(ldm_dirs, "online", "data.flip=true", "data.caption_dropout=0.5")
    cached = _task(ldm_dirs, "cached", "data.flip=true", "data.caption_dropout=0.5", "data.cache_latents=true",
                   "data.cache_text=true")
    cached.model.load_state_dict(online.model.state_dict())
    assert cached.train_dataset.latents.shape[:2] == (12, 2)  # both flips
    assert cached.text.shape[0] == 24  # every caption; dropout is not in the cache
    for task in (online, cached):
        task.batch = _batch(task)
        torch.manual_seed(6)  # the same flips, caption picks, dropout, latent draws and noise
        task.result = task.loss(task.model, task.batch)
    assert cached.result[1]["caption_dropped"] == online.result[1]["caption_dropped"]
    assert cached.result[0].item() == pytest.approx(online.result[0].item(), rel=1e-2)
    # A second task with the same models finds the cache (keyed by the models' weights) instead of encoding.
    again = _task(ldm_dirs, "cached2", "data.flip=true", "data.cache_latents=true")
    assert np.array_equal(np.asarray(again.train_dataset.latents), np.asarray(cached.train_dataset.latents))


def test_preflight_rejects_bad_inputs(ldm_dirs, tmp_path):
    from emocli.methods.ldm.preflight import preflight

    with pytest.raises(EmoError, match="data.prepared: .* is not a prepared caption folder"):
        preflight(_recipe(ldm_dirs, tmp_path, f"data.prepared={tmp_path}"))
    with pytest.raises(EmoError, match="model.vae"):
        preflight(_recipe(ldm_dirs, tmp_path, f"model.vae={tmp_path / 'nope'}"))
    with pytest.raises(EmoError, match="needs a CUDA GPU"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        preflight(_recipe(ldm_dirs, tmp_path, "launch.mixed_precision=fp16"))


# --- the real recipe at full size ---------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_recipe_two_steps(tmp_path):
    """recipes/ldm.yaml's UNet, the SD 1.4 VAE and CLIP ViT-B/32 text architectures with random weights, 2 steps
    of accumulation 2 on 256 px images (batch 4 instead of 64, so that it fits a CPU), LPIPS and KL on."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from emocli.data.captions import prepare_captions, synth_captions
    from emocli.metrics.lpips import LPIPS
    from emocli.testing.tiny import build_clip_tokenizer
    from emocli.worker import run_method

    metric = LPIPS()  # AlexNet's real widths, random weights, in the files' layouts
    lpips = (tmp_path / "alexnet.safetensors", tmp_path / "alex.safetensors")
    save_file({k: v.contiguous() for k, v in metric.net.state_dict().items()}, str(lpips[0]))
    save_file({f"lin{k}.model.1.weight": h.model[1].weight.contiguous() for k, h in enumerate(metric.heads)},
              str(lpips[1]))
    tok = build_clip_tokenizer(tmp_path / "clip")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                 num_attention_heads=8, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                  ).save_pretrained(tmp_path / "clip")
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                  sample_size=256).save_pretrained(tmp_path / "sd" / "vae")
    prepared = prepare_captions(synth_captions(tmp_path / "src", n=8, size=256), tmp_path / "prep",
                                test_fraction=0.0)
    recipe = load_recipe("ldm", [f"model.text_encoder={tmp_path / 'clip'}", f"model.vae={tmp_path / 'sd'}",
                                 f"data.prepared={prepared}", f"run.output_dir={tmp_path / 'run'}",
                                 "launch.mixed_precision='no'", "train.max_steps=2", "train.num_workers=0",
                                 "train.batch_size=4", "loss.lpips_from_epoch=0", "loss.kl_from_epoch=0",
                                 f"loss.lpips_backbone={lpips[0]}", f"loss.lpips_heads={lpips[1]}",
                                 "data.cache_latents=false", "data.cache_text=false", "~train.ema",
                                 "validation.prompts=[a red circle]", "validation.steps=1",
                                 "validation.images_per_prompt=1"])
    assert tuple(recipe.model.unet_config.block_out_channels) == (256, 512, 768)
    assert recipe.train.grad_accum == 2 and recipe.data.resolution == 256
    run_method(prepare_run(recipe, ["test"]).dir, False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(np.isfinite(r["loss"]) and "loss_lpips" in r and "loss_kl"
                                                        in r for r in steps)
    assert (tmp_path / "run" / "final" / "model" / "model_index.json").is_file()


# --- emo eval generation on the prompt layout -------------------------------------------------------------


def _eval(samples, prepared, models, out, *extra):
    from typer.testing import CliRunner

    from emocli.cli import app
    from emocli.progress import setup_logging

    done = CliRunner().invoke(app, ["eval", "generation", "tiny/eval-generation", f"data.samples={samples}",
                                    f"data.prepared={prepared}", f"models.clip={models['clip']}",
                                    f"models.inception={models['inception']}", "~models.lpips_backbone",
                                    "~models.lpips_heads", "~models.scene_classifier", "~models.object_classifier",
                                    "~models.emotion_head", f"run.output_dir={out}", *extra])
    setup_logging(None, main_process=False)
    assert done.exit_code == 0, (done.output[-3000:], done.exception)
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def eval_models(ldm_dirs):
    from emocli.evaluation.tiny import make_tiny_metric_weights

    weights = make_tiny_metric_weights(ldm_dirs["root"] / "metrics")
    return {"clip": ldm_dirs["models"]["clip"], "inception": weights["inception"]}


def test_eval_prompt_layout_against_independent_values(ldm_dirs, eval_models, tmp_path):
    """The test images themselves as 'generated' images: FID 0, CLIP-I matched 1; CLIP-I all-pairs and CLIP-T
    equal cosines computed here with transformers' CLIPModel."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from emocli.data.captions import PreparedCaptions
    from emocli.samples import SampleWriter

    test = PreparedCaptions(ldm_dirs["prepared"]).records("test")
    with SampleWriter(tmp_path / "s") as writer:
        for r in test:
            writer.write("prompts", f"{r['id']}_00", Image.open(r["image"]).convert("RGB"),
                         {"prompt": r["captions"][0], "seed": 0, "reference_id": r["id"]})
        writer.commit(lambda out: out / "grid.png")
    m = _eval(tmp_path / "s", ldm_dirs["prepared"], eval_models, tmp_path / "eval")
    assert m["layout"] == "prompts" and m["counts"] == {"generated": 4, "reference": 4, "unreadable_reference": {}}
    assert m["metrics"]["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert m["metrics"]["clip_i"]["matched"] == pytest.approx(1.0, abs=1e-9)
    model, processor = CLIPModel.from_pretrained(eval_models["clip"]), CLIPProcessor.from_pretrained(eval_models["clip"])
    with torch.no_grad():
        pix = processor(images=[Image.open(r["image"]).convert("RGB") for r in test], return_tensors="pt")
        img = model.get_image_features(**pix)
        img = getattr(img, "pooler_output", img).double().numpy()
        ids = processor(text=[r["captions"][0] for r in test], return_tensors="pt", padding=True)
        txt = model.get_text_features(**ids)
        txt = getattr(txt, "pooler_output", txt).double().numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    assert m["metrics"]["clip_i"]["all_pairs"] == pytest.approx(float((img @ img.T).mean()), abs=1e-5)
    assert m["metrics"]["clip_t"]["value"] == pytest.approx(float((img * txt).sum(1).mean()), abs=1e-5)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "seed 004 (reported)" in report and "conventions unknown" in report and "82.65" in report


@pytest.mark.slow  # a subprocess `emo sample` plus an evaluation: the chain; the metrics are tested above
def test_trained_run_samples_the_test_split_and_evaluates(ldm_dirs, trained, eval_models, tmp_path):
    r = run_emo("sample", "--run", str(trained["four"]), "--prompts", str(ldm_dirs["prepared"]), "--steps", "2", "--n", "1",
                "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-2000:]
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "s" / "prompts").glob("*.json"))]
    assert len(sidecars) == 4 and all(s["reference_id"] for s in sidecars)
    m = _eval(tmp_path / "s", ldm_dirs["prepared"], eval_models, tmp_path / "eval")
    assert m["metrics"]["clip_i"]["n_matched"] == 4
    assert all(np.isfinite(v) for v in m["table"].values()) and set(m["table"]) == {"FID", "CLIP-I", "CLIP-T"}
