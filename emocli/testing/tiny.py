"""Tiny, randomly initialised models with locally built tokenizers and processors (tests, CPU smoke runs).

Nothing is downloaded. Every model is built from a config with a fixed seed; every tokenizer is a BPE
learnt here, deterministically, on a small built-in English corpus and written as vocab.json/merges.txt.
`make_tiny(out_dir)` saves the models as folders that load back with the ordinary calls:

    sd/      diffusers.StableDiffusionPipeline.from_pretrained (unet, vae, text_encoder, tokenizer, scheduler;
             no safety checker). 32x32 px images, 16x16x4 latents.
    clip/    transformers CLIPModel / CLIPTokenizer / CLIPImageProcessor / CLIPProcessor / AutoProcessor.
             Its text tower is the SD text encoder (same config and weights), as CLIP ViT-L/14 is for SD 1.5.
    resnet/  ResNetForImageClassification (the 8 EmoSet labels) / AutoImageProcessor (ConvNext, 36 -> crop 32).
    gpt2/    GPT2LMHeadModel / AutoModelForCausalLM + AutoTokenizer (byte-level BPE).
    unidiffuser/  diffusers.UniDiffuserPipeline.from_pretrained (unet: UniDiffuserModel v1-style with the
             data-type token, vae, text_encoder: CLIP text 32-d, image_encoder: CLIP vision 32 px, clip_image_processor,
             clip_tokenizer, text_decoder: UniDiffuserTextDecoder 32-d GPT-2 with a 16-d prefix, text_tokenizer
             with <|EOS|>, scheduler: DPM-Solver++ order 3). 32x32 px images, 8x8x4 latents, 2x2 patches,
             32 text tokens (the real model: 77).
    vlm/     LlavaForConditionalGeneration / AutoModelForImageTextToText (CLIP vision + Llama) + AutoProcessor
             (LlavaProcessor with a ChatML-style chat template, `<image>` placeholder).

No torchvision is needed anywhere: the processors are built from the PIL classes (`CLIPImageProcessorPil`,
`ConvNextImageProcessorPil`), and on loading transformers 5 resolves `CLIPImageProcessor`,
`AutoImageProcessor` and `AutoProcessor` to those PIL backends when torchvision is absent (with torchvision
installed they pick the torchvision backend; `AutoImageProcessor.from_pretrained(dir, backend="pil")`
forces PIL, `use_fast=False` is the deprecated spelling). This module is heavy (torch, transformers,
diffusers): import it lazily.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import torch

EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
KINDS = ("sd", "clip", "resnet", "gpt2", "vlm", "unidiffuser")

# Stable Diffusion: 32x32 px images, VAE down factor 2 -> 16x16 latents with 4 channels.
TINY_SD_RESOLUTION = 32
TINY_SD_LATENT_SIZE = 16
TINY_SD_LATENT_CHANNELS = 4
# CLIP: the text hidden size is also the SD text encoder's hidden size and the UNet's cross_attention_dim.
TINY_TEXT_HIDDEN = 32
TINY_TEXT_MAX_LENGTH = 77
TINY_CLIP_IMAGE_SIZE = 32
TINY_CLIP_PATCH = 8
TINY_CLIP_PROJECTION_DIM = 32
TINY_RESNET_IMAGE_SIZE = 32
# VLM (LLaVA): a 32 px CLIP vision tower with 8 px patches -> 16 image tokens per image (CLS dropped).
TINY_VLM_IMAGE_SIZE = 32
TINY_VLM_PATCH = 8
TINY_VLM_IMAGE_TOKENS = (TINY_VLM_IMAGE_SIZE // TINY_VLM_PATCH) ** 2

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
GPT_EOS = "<|endoftext|>"
VLM_IM_START, VLM_IM_END, VLM_IMAGE = "<|im_start|>", "<|im_end|>", "<image>"

# The VLM chat template: ChatML-like; string or list content; {"type": "image"} parts become <image>.
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The corpus the BPE merges are learnt from: emotions, EmoSet-like objects and scenes, prompt words,
# VLM answer formats. Any other text still tokenizes (every byte is in the vocabulary).
_CORPUS = """
amusement awe contentment excitement anger disgust fear sadness
amusement awe contentment excitement anger disgust fear sadness
amusement awe contentment excitement anger disgust fear sadness
amused amusing awesome content contented excited exciting angry disgusting disgusted afraid fearful scary
sad sadness happy happiness joy joyful calm peaceful serene surprise surprised love lovely hate terror
emotion emotions emotional feeling feelings mood positive negative neutral polarity evoke evokes evoked
a photo of a cup. a photo of a bag. a photo of a room. a photo of a street. a photo of the sea.
a picture of a dog in a park. an image of a cat on a bed. a painting of a man and a woman.
a photo of a child with a ball on the beach at sunset. the sky over the mountain at night.
a cup of coffee on a table in the kitchen. a red bag on a chair in the living room.
an old street in the city with a car, a bus and a bike. a house near the river in the forest.
a girl and a boy play in the garden with flowers and trees. people at a party with cake and balloons.
a storm over the ocean with dark clouds and rain. a fire in the building. a spider on the wall.
a broken window in an empty room. rotten food and garbage in the trash. a crying baby in the hospital.
a bright sunny day in the field with grass and a lake. a snow covered bridge in winter. a cloudy morning.
a dark scary forest at night with fog. a crowd of people in a stadium at a concert. a wedding in a church.
portrait face smile smiling laugh laughing tears crying scream screaming shouting fighting hugging
dancing running walking sitting standing eating drinking playing reading sleeping swimming riding
red orange yellow green blue purple pink brown black white gray grey gold silver colorful bright dark
light warm cold big small little large old new young beautiful ugly strange quiet loud soft hard
indoor outdoor scene object objects brightness colorfulness facial expression human action
animal animals bird birds fish horse cow sheep insect snake flower flowers tree trees plant plants
car cars bus truck train boat ship plane airplane bicycle bike road bridge building buildings tower
house home door window wall floor table chair bed sofa lamp book books bottle glass plate food fruit
apple banana cake pizza bread water sea ocean beach river lake mountain mountains hill sky cloud clouds
sun moon star stars night day morning evening sunset sunrise rain snow storm wind fire smoke ice
city town village street streets park garden forest desert field farm market shop store restaurant
kitchen bedroom bathroom office school church hospital museum stadium station airport
man woman men women boy girl child children baby people person family friend friends crowd group
dog dogs cat cats toy toys ball game music party wedding festival concert war accident disaster
the of a an and or in on at to with for from by is are was were be this that these those it its
there here what which who how why when where does do did not no yes very more most some any all
image images photo photos picture pictures painting art style artistic realistic high quality detailed
question answer think thinking reason reasoning because so then first final choose one option options
user assistant system describe description caption look looks like shows show showing contains
<think> the image looks calm </think> <answer>contentment</answer>
<think> dark and scary </think> <answer>fear</answer>
<answer>amusement</answer> <answer>awe</answer> <answer>contentment</answer> <answer>excitement</answer>
<answer>anger</answer> <answer>disgust</answer> <answer>fear</answer> <answer>sadness</answer>
<answer>yes</answer> <answer>no</answer> <think></think> <answer></answer>
which emotion does this image evoke? answer with one word. does this image evoke fear? yes or no.
0 1 2 3 4 5 6 7 8 9 10 20 50 100 score: 0 to 100.
"""


# ---------------------------------------------------------------------------------------------------
# Byte-pair encoding, learnt here (deterministic, pure Python)
# ---------------------------------------------------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of byte-level BPE (GPT-2 and CLIP vocabularies):
    printable Latin-1 bytes map to themselves, the others to code points from 256 upwards."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def learn_bpe(words: Counter, max_merges: int) -> list[tuple[str, str]]:
    """Merges learnt greedily from `words` (symbol tuple -> count): the most frequent adjacent pair first,
    ties broken by the smaller pair, until `max_merges` or every word is a single symbol."""
    seqs = [list(w) for w in sorted(words)]
    counts = [words[tuple(w)] for w in seqs]
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, seq in enumerate(seqs):
        for pair in zip(seq, seq[1:]):
            pair_count[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg or neg >= 0:
            continue  # stale entry
        merges.append(pair)
        joined = pair[0] + pair[1]
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            seq, c = seqs[i], counts[i]
            for p in zip(seq, seq[1:]):
                pair_count[p] -= c
                touched.add(p)
            out, j = [], 0
            while j < len(seq):
                if j + 1 < len(seq) and seq[j] == pair[0] and seq[j + 1] == pair[1]:
                    out.append(joined)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += c
                where[p].add(i)
                touched.add(p)
        pair_count.pop(pair, None)
        for p in sorted(touched):
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], p))
    return merges


def _corpus_lines() -> list[str]:
    return [line for line in _CORPUS.strip().splitlines() if line.strip()]


_CACHE: dict[str, tuple[dict[str, int], list[tuple[str, str]]]] = {}


def clip_vocab_and_merges(max_merges: int = 1000) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE (lower-cased words, `</w>` end-of-word suffix, byte-level alphabet): the 256
    byte characters alone and with `</w>`, the merged tokens in merge order, then <|startoftext|> and
    <|endoftext|> (the two largest ids, as in OpenAI CLIP)."""
    key = f"clip-{max_merges}"
    if key not in _CACHE:
        from transformers import CLIPTokenizer

        # split the corpus exactly as CLIPTokenizer will (its normalizer and pre-tokenizer)
        splitter = CLIPTokenizer(vocab={CLIP_BOS: 0, CLIP_EOS: 1}, merges=[]).backend_tokenizer
        words: Counter = Counter()
        for line in _corpus_lines():
            for piece, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(line)):
                words[(*piece[:-1], piece[-1] + "</w>")] += 1
        merges = learn_bpe(words, max_merges)
        alphabet = list(bytes_to_unicode().values())
        tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges] + [CLIP_BOS, CLIP_EOS]
        vocab: dict[str, int] = {}
        for token in tokens:
            vocab.setdefault(token, len(vocab))
        _CACHE[key] = (vocab, merges)
    return _CACHE[key]


def byte_level_vocab_and_merges(max_merges: int = 1000) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A GPT-2-style byte-level BPE (case kept, spaces as a `Ġ` prefix): 256 byte characters, the merged
    tokens, then <|endoftext|>."""
    key = f"bytelevel-{max_merges}"
    if key not in _CACHE:
        from tokenizers import pre_tokenizers

        splitter = pre_tokenizers.ByteLevel(add_prefix_space=False)
        words: Counter = Counter()
        for line in _corpus_lines():
            for text in (line, line.capitalize()):
                for piece, _ in splitter.pre_tokenize_str(text):
                    words[tuple(piece)] += 1
        merges = learn_bpe(words, max_merges)
        tokens = list(bytes_to_unicode().values()) + [a + b for a, b in merges] + [GPT_EOS]
        vocab: dict[str, int] = {}
        for token in tokens:
            vocab.setdefault(token, len(vocab))
        _CACHE[key] = (vocab, merges)
    return _CACHE[key]


def _write_bpe_files(out_dir: Path, vocab: dict[str, int], merges: list[tuple[str, str]], config: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _in_dir(out_dir: str | Path | None, build):
    if out_dir is not None:
        return build(Path(out_dir))
    with tempfile.TemporaryDirectory(prefix="emo-tiny-tok-") as tmp:
        return build(Path(tmp))


# ---------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------
def build_clip_tokenizer(out_dir: str | Path | None = None):
    """Write a CLIP BPE (vocab.json, merges.txt, tokenizer_config.json) to `out_dir` and load it back with
    `CLIPTokenizer.from_pretrained` (in transformers 5 `CLIPTokenizerFast` is the same class). Pad token
    <|endoftext|>, model_max_length 77. With `out_dir=None` a temporary folder is used."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_TEXT_MAX_LENGTH,
              "bos_token": CLIP_BOS, "eos_token": CLIP_EOS, "unk_token": CLIP_EOS, "pad_token": CLIP_EOS,
              "do_lower_case": True, "clean_up_tokenization_spaces": False}

    def build(path: Path):
        _write_bpe_files(path, vocab, merges, config)
        return CLIPTokenizer.from_pretrained(str(path))

    return _in_dir(out_dir, build)


def build_gpt2_tokenizer(out_dir: str | Path | None = None):
    """A byte-level BPE `GPT2Tokenizer` (vocab.json + merges.txt written here); <|endoftext|> is bos, eos,
    unk and pad."""
    from transformers import GPT2Tokenizer

    vocab, merges = byte_level_vocab_and_merges()
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 128, "bos_token": GPT_EOS,
              "eos_token": GPT_EOS, "unk_token": GPT_EOS, "pad_token": GPT_EOS, "add_prefix_space": False,
              "clean_up_tokenization_spaces": False}

    def build(path: Path):
        _write_bpe_files(path, vocab, merges, config)
        return GPT2Tokenizer.from_pretrained(str(path))

    return _in_dir(out_dir, build)


def build_vlm_tokenizer(out_dir: str | Path | None = None):
    """The byte-level BPE of `build_gpt2_tokenizer` plus the VLM special tokens <|im_start|>, <|im_end|>
    (eos) and <image>; <|endoftext|> pads; left padding; the chat template `VLM_CHAT_TEMPLATE`.
    `<think>`, `</think>`, `<answer>`, `</answer>` are ordinary text (they survive skip_special_tokens)."""
    from transformers import GPT2Tokenizer

    vocab, merges = byte_level_vocab_and_merges()
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 512, "bos_token": None,
              "eos_token": VLM_IM_END, "unk_token": GPT_EOS, "pad_token": GPT_EOS, "add_prefix_space": False,
              "padding_side": "left", "clean_up_tokenization_spaces": False,
              "additional_special_tokens": [VLM_IM_START, VLM_IM_END, VLM_IMAGE]}

    def build(path: Path):
        _write_bpe_files(path, vocab, merges, config)
        tok = GPT2Tokenizer.from_pretrained(str(path))
        tok.add_special_tokens({"additional_special_tokens": [VLM_IM_START, VLM_IM_END, VLM_IMAGE]})
        tok.eos_token = VLM_IM_END
        tok.chat_template = VLM_CHAT_TEMPLATE
        return tok

    return _in_dir(out_dir, build)


# ---------------------------------------------------------------------------------------------------
# Models (in memory)
# ---------------------------------------------------------------------------------------------------
# per-component seed offsets: each part depends on the seed only, not on what was built before it
_OFFSETS = {"clip": 0, "unet": 1, "vae": 2, "resnet": 3, "gpt2": 4, "vlm": 5, "uvit": 6, "clip_vision": 7,
            "text_decoder": 8, "qwen": 9}


@contextmanager
def _seeded(seed: int, part: str):
    """Seed torch's global generator for one model constructor, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 101 + _OFFSETS[part])
        yield


def _clip_text_config(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=TINY_TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=TINY_TEXT_MAX_LENGTH, hidden_act="quick_gelu",
                projection_dim=TINY_CLIP_PROJECTION_DIM, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def clip_image_processor(size: int = TINY_CLIP_IMAGE_SIZE):
    """The PIL (torchvision-free) CLIP image processor: resize the short side to `size`, centre-crop."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tiny_clip(seed: int = 0):
    """(CLIPModel, CLIPProcessor): text 32-d / vision 32-d (32 px, 8 px patches), 2 layers each, projection 32."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config=_clip_text_config(tokenizer),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=TINY_CLIP_IMAGE_SIZE, patch_size=TINY_CLIP_PATCH, hidden_act="quick_gelu",
                           projection_dim=TINY_CLIP_PROJECTION_DIM),
        projection_dim=TINY_CLIP_PROJECTION_DIM,
    )
    with _seeded(seed, "clip"):
        model = CLIPModel(config).eval()
    return model, CLIPProcessor(image_processor=clip_image_processor(), tokenizer=tokenizer)


def tiny_sd_components(seed: int = 0) -> dict:
    """The parts of a tiny StableDiffusionPipeline: `unet`, `vae`, `text_encoder` (the text tower of
    `tiny_clip(seed)`, same weights), `tokenizer`, `scheduler` (DDPM, SD 1.5 betas), no safety checker."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    clip, processor = tiny_clip(seed)
    tokenizer = processor.tokenizer
    with _seeded(seed, "clip"):  # initialised, then overwritten: keeps the caller's RNG untouched
        text_encoder = CLIPTextModel(CLIPTextConfig(**_clip_text_config(tokenizer)))
    text_encoder.load_state_dict(clip.text_model.state_dict())
    with _seeded(seed, "unet"):
        unet = UNet2DConditionModel(
            sample_size=TINY_SD_LATENT_SIZE, in_channels=TINY_SD_LATENT_CHANNELS,
            out_channels=TINY_SD_LATENT_CHANNELS, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TINY_TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=8,
        )
    with _seeded(seed, "vae"):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
            latent_channels=TINY_SD_LATENT_CHANNELS, norm_num_groups=8, sample_size=TINY_SD_RESOLUTION,
        )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                              prediction_type="epsilon")
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


def tiny_sd_pipeline(seed: int = 0):
    """A tiny `StableDiffusionPipeline` (32x32 px images, 16x16x4 latents), no safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**tiny_sd_components(seed), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)


def resnet_image_processor(size: int = TINY_RESNET_IMAGE_SIZE):
    """The PIL ConvNext processor that AutoImageProcessor gives ResNets: short side to size / 0.875
    (36 for 32), centre-crop `size`, ImageNet mean/std."""
    from transformers import ConvNextImageProcessorPil

    return ConvNextImageProcessorPil(size={"shortest_edge": size}, crop_pct=0.875,
                                     image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def tiny_resnet(seed: int = 0, num_labels: int = 8):
    """(ResNetForImageClassification, image processor): embedding 16, hidden sizes [16, 32], depths [1, 1],
    basic blocks; labels = the 8 EmoSet emotions (for num_labels=8)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    labels = list(EMOTIONS) if num_labels == len(EMOTIONS) else [f"LABEL_{i}" for i in range(num_labels)]
    config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                          layer_type="basic", hidden_act="relu", num_labels=num_labels,
                          id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    with _seeded(seed, "resnet"):
        model = ResNetForImageClassification(config).eval()
    return model, resnet_image_processor()


def tiny_gpt2(seed: int = 0):
    """(GPT2LMHeadModel, tokenizer): n_embd 32, 2 layers, 2 heads, 128 positions, byte-level BPE."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_gpt2_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    with _seeded(seed, "gpt2"):
        model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def tiny_vlm(seed: int = 0):
    """(LlavaForConditionalGeneration, LlavaProcessor): CLIP vision (32 px, 8 px patches, 2 layers, 32-d,
    last layer's features, CLS dropped -> 16 image tokens) + Llama (32-d, 2 layers, 4 heads, 2 KV heads)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_vlm_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(VLM_IMAGE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=TINY_VLM_IMAGE_SIZE,
                                       patch_size=TINY_VLM_PATCH, hidden_act="quick_gelu"),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=512, tie_word_embeddings=False,
                                bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=image_token_id, image_seq_length=TINY_VLM_IMAGE_TOKENS,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    with _seeded(seed, "vlm"):
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    processor = LlavaProcessor(image_processor=clip_image_processor(TINY_VLM_IMAGE_SIZE), tokenizer=tokenizer,
                               patch_size=TINY_VLM_PATCH, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=VLM_CHAT_TEMPLATE)
    return model, processor


QWEN_VISION_START, QWEN_VISION_END, QWEN_IMAGE_PAD, QWEN_VIDEO_PAD = (
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen2.5-VL's chat template reduced to what the GRPO prompts use: an image part is
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands to one pad per merged patch.
QWEN_CHAT_TEMPLATE = VLM_CHAT_TEMPLATE.replace(
    "{{ '<image>' }}", "{{ '" + QWEN_VISION_START + QWEN_IMAGE_PAD + QWEN_VISION_END + "' }}")
TINY_QWEN_PATCH = 14  # Qwen2-VL's patch size; 2x2 patches merge into one language token


def tiny_qwen2_5_vl(seed: int = 0):
    """(Qwen2_5_VLForConditionalGeneration, tokenizer, image processor) of the real architecture at toy size:
    a 2-block vision tower (`model.visual`, 32-d, windowed attention) whose `visual.merger` projects 2x2
    patches to the 32-d, 2-layer Qwen2 language model with M-RoPE. The image processor is the PIL backend
    (`Qwen2VLImageProcessorPil`); Qwen2.5-VL's full processor also needs a torchvision video processor."""
    from transformers import GPT2Tokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    specials = [VLM_IM_START, VLM_IM_END, QWEN_VISION_START, QWEN_VISION_END, QWEN_IMAGE_PAD, QWEN_VIDEO_PAD]

    def build(path: Path):
        vocab, merges = byte_level_vocab_and_merges()
        _write_bpe_files(path, vocab, merges, {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024,
                                               "bos_token": None, "eos_token": VLM_IM_END, "unk_token": GPT_EOS,
                                               "pad_token": GPT_EOS, "padding_side": "left",
                                               "clean_up_tokenization_spaces": False})
        tok = GPT2Tokenizer.from_pretrained(str(path))
        tok.add_special_tokens({"additional_special_tokens": specials})
        tok.eos_token = VLM_IM_END
        tok.chat_template = QWEN_CHAT_TEMPLATE
        return tok

    tokenizer = _in_dir(None, build)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 1024, "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
                     "tie_word_embeddings": False, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4,
                       "out_hidden_size": 32, "patch_size": TINY_QWEN_PATCH, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1]},
        image_token_id=ids[QWEN_IMAGE_PAD], video_token_id=ids[QWEN_VIDEO_PAD],
        vision_start_token_id=ids[QWEN_VISION_START], vision_end_token_id=ids[QWEN_VISION_END],
    )
    with _seeded(seed, "qwen"):
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56 * 4,
                                               patch_size=TINY_QWEN_PATCH, merge_size=2, temporal_patch_size=2)
    return model, tokenizer, image_processor


def qwen_inputs(tokenizer, image_processor, conversations: list, images: list, merge_size: int = 2) -> dict:
    """Model inputs for Qwen2/2.5-VL without its processor: the chat template, each <|image_pad|> repeated
    once per merged patch (grid t*h*w / merge_size^2, as Qwen2_5_VLProcessor does), pixel patches and
    image_grid_thw from the image processor. Left padding."""
    vision = image_processor(images=images, return_tensors="pt")
    grid = vision["image_grid_thw"]
    texts = []
    n = 0
    for conversation in conversations:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        parts = text.split(QWEN_IMAGE_PAD)
        out = parts[0]
        for part in parts[1:]:
            out += QWEN_IMAGE_PAD * (int(grid[n].prod()) // merge_size ** 2) + part
            n += 1
        texts.append(out)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return {**batch, "pixel_values": vision["pixel_values"], "image_grid_thw": grid}


def save_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny Qwen2.5-VL as a from_pretrained folder with its full Qwen2_5_VLProcessor (image + video
    processors + tokenizer), as the real checkpoints ship it. Needs torchvision (the video processor)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    model, tokenizer, image_processor = tiny_qwen2_5_vl(seed)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(patch_size=TINY_QWEN_PATCH),
                                    chat_template=QWEN_CHAT_TEMPLATE)
    out = Path(out_dir)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


# UniDiffuser: text latents of TINY_UNIDIFFUSER_TEXT_DIM per token (the real model: 64), CLIP image embeds 32-d.
TINY_UNIDIFFUSER_TEXT_DIM = 16
UNIDIFFUSER_EOS = "<|EOS|>"
TINY_UNIDIFFUSER_VAE_SCALE = 4.0  # the real VAE's is 0.18215
# 32 text tokens instead of the real 77 and 8x8 latents (16 patches): the conditional sequence (response +
# speaker + [EMO]) is ~100 tokens instead of ~290, which keeps CPU training of the tiny model quick.
TINY_UNIDIFFUSER_TEXT_TOKENS = 32
TINY_UNIDIFFUSER_PATCH = 2
TINY_UNIDIFFUSER_LATENT_SIZE = 8


def tiny_unidiffuser_components(seed: int = 0) -> dict:
    """The parts of a tiny `UniDiffuserPipeline` (v1-style: data-type token), all built from configs.

    The CLIP text encoder is `tiny_sd_components`' (32-d, so the caption decoder's prefix_inner_dim is 32),
    the VAE a 3-block tiny VAE (32 px -> 8x8x4 latents), the image encoder a 32 px CLIP vision tower with a
    32-d projection, the caption decoder a 2-layer 32-d GPT-2 with encode_prefix 32 -> 16."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UniDiffuserModel, UniDiffuserTextDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    sd = tiny_sd_components(seed)
    hf_level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the decoder's GPT2Config names GPT-2's bos/eos ids, outside a tiny vocab
    text_tokenizer = build_gpt2_tokenizer()
    text_tokenizer.add_special_tokens({"eos_token": UNIDIFFUSER_EOS})
    with _seeded(seed, "clip_vision"):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=TINY_CLIP_IMAGE_SIZE, patch_size=TINY_CLIP_PATCH, hidden_act="quick_gelu",
            projection_dim=TINY_CLIP_PROJECTION_DIM))
    with _seeded(seed, "text_decoder"):
        text_decoder = UniDiffuserTextDecoder(
            prefix_length=TINY_UNIDIFFUSER_TEXT_TOKENS, prefix_inner_dim=TINY_TEXT_HIDDEN,
            prefix_hidden_dim=TINY_UNIDIFFUSER_TEXT_DIM, vocab_size=len(text_tokenizer), n_positions=256,
            n_embd=TINY_TEXT_HIDDEN, n_layer=2, n_head=4, n_inner=64, activation_function="gelu")
    # safetensors refuses shared tensors: give the LM head its own copy of the (tied) token embedding
    lm_head = text_decoder.transformer.lm_head
    lm_head.weight = torch.nn.Parameter(lm_head.weight.detach().clone())
    hf_logging.set_verbosity(hf_level)
    with _seeded(seed, "uvit"):
        unet = UniDiffuserModel(
            text_dim=TINY_UNIDIFFUSER_TEXT_DIM, clip_img_dim=TINY_CLIP_PROJECTION_DIM,
            num_text_tokens=TINY_UNIDIFFUSER_TEXT_TOKENS, num_attention_heads=2, attention_head_dim=32,
            in_channels=TINY_SD_LATENT_CHANNELS, out_channels=TINY_SD_LATENT_CHANNELS, num_layers=3,
            sample_size=TINY_UNIDIFFUSER_LATENT_SIZE, patch_size=TINY_UNIDIFFUSER_PATCH, activation_fn="gelu", num_embeds_ada_norm=1000,
            block_type="unidiffuser", pre_layer_norm=False, use_timestep_embedding=False, ff_final_dropout=True,
            use_data_type_embedding=True)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            solver_order=3)
    # A trained VAE's posterior is narrow and its scaled latents have about unit variance; a random one's
    # is as wide as its prior (std ~1 around means that differ by ~0.2). Narrow it (logvar bias -8) and
    # scale its latents to about unit spread, so that "which face" survives encoding in the tiny model.
    with _seeded(seed, "vae"):  # three blocks: 32 px -> 8x8x4 latents (the SD one's 16x16 is slow to learn)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
            latent_channels=TINY_SD_LATENT_CHANNELS, norm_num_groups=8, sample_size=TINY_SD_RESOLUTION,
        )
    with torch.no_grad():
        vae.quant_conv.bias[TINY_SD_LATENT_CHANNELS:] = -8.0
    vae.register_to_config(scaling_factor=TINY_UNIDIFFUSER_VAE_SCALE)
    clip_tokenizer = sd["tokenizer"]
    clip_tokenizer.model_max_length = TINY_UNIDIFFUSER_TEXT_TOKENS
    return {"vae": vae, "text_encoder": sd["text_encoder"], "image_encoder": image_encoder.eval(),
            "clip_image_processor": clip_image_processor(), "clip_tokenizer": clip_tokenizer,
            "text_decoder": text_decoder.eval(), "text_tokenizer": text_tokenizer, "unet": unet.eval(),
            "scheduler": scheduler}


def save_tiny_unidiffuser(out_dir: str | Path, seed: int = 0) -> Path:
    """Save the tiny UniDiffuser in diffusers' pipeline layout (without the deprecated pipeline's warning)."""
    from diffusers import UniDiffuserPipeline
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # UniDiffuserPipeline is deprecated in diffusers >= 0.34
    try:
        UniDiffuserPipeline(**tiny_unidiffuser_components(seed)).save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(level)
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------
def save_tiny(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build one tiny model (`kind` in KINDS) and save it as a from_pretrained folder at `out_dir`."""
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model {kind!r}; valid: {', '.join(KINDS)}")
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars for kilobyte files
    try:
        if kind == "sd":
            tiny_sd_pipeline(seed).save_pretrained(str(out), safe_serialization=True)
        elif kind == "unidiffuser":
            save_tiny_unidiffuser(out, seed)
        else:
            build = {"clip": tiny_clip, "resnet": tiny_resnet, "gpt2": tiny_gpt2, "vlm": tiny_vlm}[kind]
            model, processing = build(seed)  # processing: processor, image processor or tokenizer
            model.save_pretrained(str(out))
            processing.save_pretrained(str(out))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out


def make_tiny(out_dir: str | Path, seed: int = 0, which: Iterable[str] = KINDS) -> dict[str, Path]:
    """Write the tiny model folders `out_dir/<kind>` for each kind in `which` (default: all of KINDS) and
    return {kind: folder}. The same seed gives byte-identical weight files."""
    which = tuple(which)
    bad = [k for k in which if k not in KINDS]
    if bad:
        raise ValueError(f"unknown tiny model {bad[0]!r}; valid: {', '.join(KINDS)}")
    root = Path(out_dir)
    return {kind: save_tiny(kind, root / kind, seed=seed) for kind in which}
