"""Tiny random models (`emocli.testing.tiny`): local tokenizers, from_pretrained folders, determinism,
no torchvision."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emocli.testing import tiny

EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which emotion?"}]}]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> dict[str, Path]:
    return tiny.make_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


def _image(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8))


def _digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


# -- tokenizers -------------------------------------------------------------------------------------
def test_learn_bpe_is_greedy_and_breaks_ties_by_the_smaller_pair():
    words = Counter({("l", "o", "w</w>"): 5, ("l", "o", "t</w>"): 2, ("a", "b</w>"): 2, ("c", "d</w>"): 2})
    merges = tiny.learn_bpe(words, 10)
    assert merges[0] == ("l", "o")  # 7 occurrences
    assert merges[1] == ("lo", "w</w>")  # 5
    assert merges[2:] == [("a", "b</w>"), ("c", "d</w>"), ("lo", "t</w>")]  # 2 each, smaller pair first
    assert tiny.learn_bpe(words, 2) == merges[:2]


def test_clip_tokenizer_files_and_loaders(tmp_path):
    from transformers import AutoTokenizer, CLIPTokenizer, CLIPTokenizerFast

    tok = tiny.build_clip_tokenizer(tmp_path / "tok")
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in (tmp_path / "tok").iterdir()}
    for loader in (CLIPTokenizer, CLIPTokenizerFast, AutoTokenizer):
        other = loader.from_pretrained(str(tmp_path / "tok"))
        assert other("a photo of fear").input_ids == tok("a photo of fear").input_ids
    assert tok.model_max_length == tiny.TINY_TEXT_MAX_LENGTH == 77
    assert tok.pad_token == tok.eos_token == "<|endoftext|>" and tok.bos_token == "<|startoftext|>"
    # the eight emotions and the usual prompt words are single tokens
    for word in (*EMOTIONS, "cup", "bag", "room", "street", "photo", "a", "of", "the"):
        assert tok.tokenize(word) == [word + "</w>"], word
    # any text tokenizes without unknown pieces (unk is <|endoftext|>: it appears only at the end)
    for text in ("".join(chr(c) for c in range(32, 127)), "Zürich café ☃ 日本 naïve — 😀", "x7q  \t tabs"):
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids[1:-1]
    padded = tok(["fear", "a photo of a cup"], padding="max_length", truncation=True, return_tensors="pt")
    assert padded.input_ids.shape == (2, 77) and int(padded.input_ids[0, -1]) == tok.pad_token_id


def test_byte_level_tokenizers_round_trip_answers():
    gpt = tiny.build_gpt2_tokenizer()
    vlm = tiny.build_vlm_tokenizer()
    text = "Which emotion? <think>dark sky</think><answer>fear</answer> Zürich ☃"
    assert gpt.decode(gpt(text).input_ids) == text
    ids = vlm(text + "<|im_end|>").input_ids
    assert vlm.decode(ids, skip_special_tokens=True) == text  # <think>/<answer> are ordinary text
    assert vlm.unk_token_id not in ids
    assert vlm.convert_tokens_to_ids("<image>") != vlm.unk_token_id
    assert vlm.eos_token == "<|im_end|>" and vlm.padding_side == "left"


# -- folders ----------------------------------------------------------------------------------------
def test_make_tiny_layout_and_sizes(tiny_dir):
    assert set(tiny_dir) == set(tiny.KINDS)
    for kind, folder in tiny_dir.items():
        assert folder.name == kind and folder.is_dir()
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 5 * 2**20, (kind, size)
    assert (tiny_dir["sd"] / "model_index.json").is_file()
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny.make_tiny(tiny_dir["sd"].parent / "x", which=("sd", "bert"))


def test_sd_folder_generates_documented_size(tiny_dir):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir["sd"]))
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == tiny.TINY_TEXT_HIDDEN
    assert pipe.unet.config.sample_size == tiny.TINY_SD_LATENT_SIZE
    assert pipe.vae_scale_factor * tiny.TINY_SD_LATENT_SIZE == tiny.TINY_SD_RESOLUTION
    r = tiny.TINY_SD_RESOLUTION
    out = pipe("a photo of a cup, amusement", num_inference_steps=2, height=r, width=r, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, r, r, 3) and np.isfinite(out.images).all()
    assert pipe("fear", num_inference_steps=2).images[0].size == (r, r)  # the default size too
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, r, r)).latent_dist.mean
    assert latents.shape == (1, tiny.TINY_SD_LATENT_CHANNELS, tiny.TINY_SD_LATENT_SIZE, tiny.TINY_SD_LATENT_SIZE)
    # the SD text encoder is the CLIP text tower (same weights), as in SD 1.5 / CLIP ViT-L/14
    clip = CLIPModel.from_pretrained(str(tiny_dir["clip"]))
    ours, theirs = pipe.text_encoder.state_dict(), clip.text_model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_clip_folder_processes_image_and_text(tiny_dir):
    from transformers import AutoProcessor, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = str(tiny_dir["clip"])
    model = CLIPModel.from_pretrained(folder)
    assert model.config.projection_dim == tiny.TINY_CLIP_PROJECTION_DIM
    assert model.text_projection.in_features == tiny.TINY_TEXT_HIDDEN
    assert CLIPTokenizer.from_pretrained(folder).model_max_length == 77
    image_processor = CLIPImageProcessor.from_pretrained(folder)
    assert image_processor(_image(), return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)
    for processor in (CLIPProcessor.from_pretrained(folder), AutoProcessor.from_pretrained(folder)):
        batch = processor(text=["a photo of fear", "awe"], images=[_image(), _image(seed=1)], return_tensors="pt",
                          padding=True)
        assert batch.pixel_values.shape == (2, 3, tiny.TINY_CLIP_IMAGE_SIZE, tiny.TINY_CLIP_IMAGE_SIZE)
        with torch.no_grad():
            out = model(**batch)
        assert out.logits_per_image.shape == (2, 2)
        assert out.image_embeds.shape == (2, tiny.TINY_CLIP_PROJECTION_DIM)


def test_resnet_folder_classifies_eight_emotions(tiny_dir):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, ResNetForImageClassification

    folder = str(tiny_dir["resnet"])
    model = AutoModelForImageClassification.from_pretrained(folder)
    assert isinstance(model, ResNetForImageClassification)
    assert [model.config.id2label[i] for i in range(8)] == list(EMOTIONS)
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    assert type(processor).__name__ == "ConvNextImageProcessorPil"
    pixels = processor(_image(), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, tiny.TINY_RESNET_IMAGE_SIZE, tiny.TINY_RESNET_IMAGE_SIZE)
    with torch.no_grad():
        assert model(pixel_values=pixels).logits.shape == (1, 8)


def test_gpt2_folder_generates(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    folder = str(tiny_dir["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(model, GPT2LMHeadModel) and model.config.n_embd == 32
    batch = tokenizer(["A photo of a cup", "fear"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 4)
    assert tokenizer.decode(tokenizer("<answer>awe</answer>").input_ids) == "<answer>awe</answer>"


def test_vlm_folder_chat_template_forward_and_generate(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = str(tiny_dir["vlm"])
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\n<image>Which emotion?<|im_end|>\n<|im_start|>assistant\n"
    batch = processor(images=[_image(), _image(seed=1)], text=[prompt, prompt.replace("Which", "What")],
                      return_tensors="pt", padding=True)
    image_id = model.config.image_token_index
    assert (batch.input_ids == image_id).sum(dim=1).tolist() == [tiny.TINY_VLM_IMAGE_TOKENS] * 2
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch.input_ids.shape and torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=4, do_sample=True)
    assert out.shape[0] == 2 and out.shape[1] <= batch.input_ids.shape[1] + 4
    texts = processor.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    assert all(isinstance(t, str) for t in texts)
    assert processor.tokenizer.decode(processor.tokenizer("<answer>fear</answer>").input_ids,
                                      skip_special_tokens=True) == "<answer>fear</answer>"


# -- determinism ------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_weights(tiny_dir, tmp_path):
    again = tiny.make_tiny(tmp_path / "again", seed=0)
    for kind in tiny.KINDS:
        assert _digests(again[kind]) == _digests(tiny_dir[kind]), kind
    other = tiny.make_tiny(tmp_path / "other", seed=1, which=("sd", "resnet"))
    assert set(other) == {"sd", "resnet"}
    a, b = _digests(other["sd"]), _digests(tiny_dir["sd"])
    assert a["unet/diffusion_pytorch_model.safetensors"] != b["unet/diffusion_pytorch_model.safetensors"]
    assert a["tokenizer/tokenizer.json"] == b["tokenizer/tokenizer.json"]
    assert _digests(other["resnet"])["model.safetensors"] != _digests(tiny_dir["resnet"])["model.safetensors"]


def test_builders_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for build in (tiny.tiny_sd_components, tiny.tiny_clip, tiny.tiny_resnet, tiny.tiny_gpt2, tiny.tiny_vlm):
        build(seed=7)
    assert torch.equal(torch.rand(3), expected)


# -- torchvision ------------------------------------------------------------------------------------
NO_TORCHVISION = textwrap.dedent("""
    import importlib.util, sys
    if importlib.util.find_spec("torchvision") is not None:
        sys.modules["torchvision"] = None  # installed: hide it, as on a torch-only machine
    import numpy as np
    from PIL import Image
    from emocli.testing.tiny import make_tiny
    paths = make_tiny(sys.argv[1], seed=0)
    from diffusers import StableDiffusionPipeline
    from transformers import (AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor,
                              CLIPImageProcessor)
    image = Image.fromarray(np.zeros((40, 36, 3), dtype=np.uint8))
    pipe = StableDiffusionPipeline.from_pretrained(str(paths["sd"]))
    pipe("awe", num_inference_steps=1, output_type="np")
    AutoProcessor.from_pretrained(str(paths["clip"]))(text=["a"], images=[image], return_tensors="pt")
    CLIPImageProcessor.from_pretrained(str(paths["clip"]))(image)
    AutoImageProcessor.from_pretrained(str(paths["resnet"]))(image)
    processor = AutoProcessor.from_pretrained(str(paths["vlm"]))
    model = AutoModelForImageTextToText.from_pretrained(str(paths["vlm"]))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which emotion?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    model.generate(**processor(images=[image], text=[text], return_tensors="pt"), max_new_tokens=2)
    assert sys.modules.get("torchvision") is None, "torchvision was imported"
    print("NO-TORCHVISION-OK")
""")


def test_nothing_needs_torchvision(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", NO_TORCHVISION, str(tmp_path / "models")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and "NO-TORCHVISION-OK" in out.stdout, out.stderr[-3000:]
