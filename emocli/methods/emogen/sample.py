"""EmoGen generation: emotion space -> mapper -> placeholder token(s) -> Stable Diffusion.

The denoising loop is diffusers' own StableDiffusionPipeline, given the prompt embeddings that
the injected placeholder produces, so scheduling, guidance and decoding are exactly diffusers'.
Image i of a call with seed S uses latent seed S + i and emotion-vector seed S * 100003 + i:
it is reproducible on its own, whatever --n is.

`unadded_token=True` reproduces the released inference before commit 794ff7f: `<emotion>` was never
added to the tokenizer, so its id was the unknown token's, which in CLIP is end-of-text, also used for
padding. The mapper vector then replaced the end-of-text and every padding embedding of the prompt,
and `<emotion>` itself was split into ordinary word pieces. The unconditional prompt was encoded
before any vector was written, so it stays plain.

`StableDiffusionBaseline` is Table 1's "Stable Diffusion" row: the same pipeline and settings with
the paper's prompt "an image of {emotion}" and no mapper.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from emocli.emotion_space import EmotionSpace
from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.hub import load_pretrained, quiet_loading
from emocli.methods.emogen.injection import add_placeholders, encode_with_vectors, tokenize
from emocli.methods.emogen.mapper import Mapper

PLACEHOLDERS = ("<emotion>", "<emotion_2>")
RUN_CONFIG = "emogen.json"
BASELINE_PROMPT = "an image of {emotion}"
SAMPLE_DEFAULTS = {"steps": 50, "guidance": 7.5, "scheduler": "unipc", "batch_size": 4}


def load_sd_pipeline(pretrained: str, text_encoder: str | None = None, dtype=torch.float32, device="cpu"):
    """A StableDiffusionPipeline from a folder or Hub id, optionally with another text encoder."""
    from diffusers import StableDiffusionPipeline

    quiet_loading()
    pipe = load_pretrained(StableDiffusionPipeline.from_pretrained, pretrained, "model.pretrained",
                           what="Stable Diffusion", safety_checker=None, feature_extractor=None,
                           requires_safety_checker=False, dtype=dtype)
    if text_encoder:
        from transformers import CLIPTextModel, CLIPTokenizer

        pipe.text_encoder = load_pretrained(CLIPTextModel.from_pretrained, text_encoder, "model.text_encoder",
                                            what="text encoder", dtype=dtype)
        if any((Path(text_encoder) / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            pipe.tokenizer = CLIPTokenizer.from_pretrained(text_encoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def set_scheduler(pipe, name: str):
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        PNDMScheduler,
        UniPCMultistepScheduler,
    )

    config = pipe.scheduler.config
    if name == "unipc":
        pipe.scheduler = UniPCMultistepScheduler.from_config(config)
    elif name == "dpm++":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    elif name == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(config)
    elif name == "ddpm":
        pipe.scheduler = DDPMScheduler.from_config(config)
    elif name == "pndm":
        pipe.scheduler = PNDMScheduler.from_config(config)
    else:
        raise EmoError(f"unknown scheduler {name!r}; valid: unipc, dpm++, ddim, ddpm, pndm")
    return pipe


def prompt_text(placeholders: list[str], obj: str | None) -> str:
    words = list(placeholders) + ([obj.strip()] if obj and obj.strip() else [])
    return " ".join(words)


class EmoGenSampler:
    def __init__(self, pipe, mapper: Mapper, space: EmotionSpace, source: dict | None = None,
                 allow_foreign_space: bool = False, unadded_token: bool = False):
        self.pipe, self.mapper, self.space = pipe, mapper.to(pipe.device), space
        self.source = dict(source or {})
        self.unadded_token = unadded_token
        space_name = self.source.get("emotion_space", "given")
        if not space.check_encoder(mapper.config.get("encoder"), allow_foreign_space, str(space_name),
                                   "--allow-foreign-space"):
            self.source["foreign_space"] = True
        self.placeholder_ids = add_placeholders(pipe.tokenizer, list(PLACEHOLDERS))
        hidden = pipe.text_encoder.get_input_embeddings().embedding_dim
        if mapper.config["out_dim"] != hidden:
            raise EmoError(f"the mapper outputs {mapper.config['out_dim']}-d vectors but the text encoder's "
                           f"token embeddings are {hidden}-d")
        if space.dim != mapper.config["in_dim"]:
            raise EmoError(f"emotion space has dimension {space.dim}, but the mapper expects {mapper.config['in_dim']}")

    @classmethod
    def from_run(cls, run_dir: str | Path, device="cpu", dtype=torch.float32, emotion_space: str | None = None,
                 **options):
        run_dir = Path(run_dir)
        config = run_config(run_dir)
        return cls.from_parts(config["pretrained"], run_dir / "final" / "model",
                              emotion_space or run_dir / "final", config.get("text_encoder"), device, dtype,
                              source={"run": str(run_dir.resolve())}, **options)

    @classmethod
    def from_parts(cls, pretrained, mapper_dir, space_path, text_encoder=None, device="cpu", dtype=torch.float32,
                   source: dict | None = None, **options):
        mapper = Mapper.from_pretrained(mapper_dir)
        space = EmotionSpace.load(space_path, expect_dim=mapper.config["in_dim"])
        pipe = load_sd_pipeline(str(pretrained), text_encoder, dtype, device)
        src = {"pretrained": str(pretrained), "mapper": str(mapper_dir), "emotion_space": str(space_path),
               "text_encoder": text_encoder, **(source or {})}
        return cls(pipe, mapper, space, src, **options)

    def prompt(self, emotion: str, fuse: str | None, mix: float | None, obj: str | None) -> str:
        if self.unadded_token:
            return prompt_text([f"<{emotion}>"], obj)
        return prompt_text(list(PLACEHOLDERS[: 2 if fuse and mix is None else 1]), obj)

    @torch.no_grad()
    def prompt_embeds(self, emotion: str, indices: list[int], seed: int, obj: str | None = None,
                      fuse: str | None = None, mix: float | None = None) -> torch.Tensor:
        """Conditioning [len(indices), 77, hidden] for the given image indices."""
        space = self.space
        emotions = [emotion]
        if fuse is not None and mix is not None:
            space = space.mixed(emotion, fuse, mix)  # one token from the interpolated Gaussian
        elif fuse is not None:
            emotions.append(fuse)  # two tokens side by side, as the paper's fusion
        device = self.pipe.device
        if self.unadded_token:
            if len(emotions) > 1:
                raise EmoError("--unadded-token reproduces the released single-emotion inference; it cannot --fuse "
                               "two emotions (use --mix for one interpolated token)")
            # what the released code's convert_tokens_to_ids returned for the never-added token: the
            # unknown id, end-of-text for CLIP, whose embedding also fills the padding
            slot_ids = [self.pipe.tokenizer.convert_tokens_to_ids(f"<{emotion}>")]
        else:
            slot_ids = self.placeholder_ids
        vectors = {}
        for slot, name in enumerate(emotions):
            rows = []
            for i in indices:
                g = torch.Generator().manual_seed(seed * 100003 + i + 7919 * slot)
                rows.append(space.sample(name, 1, g))
            e = torch.cat(rows).to(device)
            vectors[slot_ids[slot]] = self.mapper(e.to(next(self.mapper.parameters()).dtype))
        text = self.prompt(emotion, fuse, mix, obj)
        ids = tokenize(self.pipe.tokenizer, [text] * len(indices), device)
        out = encode_with_vectors(self.pipe.text_encoder, ids, vectors)
        return out.last_hidden_state.to(self.pipe.unet.dtype)

    @torch.no_grad()
    def negative_embeds(self, n: int) -> torch.Tensor:
        ids = tokenize(self.pipe.tokenizer, [""] * n, self.pipe.device)
        return self.pipe.text_encoder(input_ids=ids).last_hidden_state.to(self.pipe.unet.dtype)

    def generate(self, emotion: str, n: int = 4, seed: int = 0, obj: str | None = None, fuse: str | None = None,
                 mix: float | None = None, steps: int = 50, guidance: float = 7.5, scheduler: str = "unipc",
                 height: int | None = None, width: int | None = None, batch_size: int = 4, start: int = 0):
        """Yield (index, PIL image, params) for images start .. start+n-1."""
        emotion = EMOSET.validate(emotion)
        fuse = EMOSET.validate(fuse) if fuse else None
        if mix is not None and fuse is None:
            raise EmoError("--mix needs --fuse EMOTION (the emotion to interpolate towards)")
        set_scheduler(self.pipe, scheduler)
        size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        height, width = height or size, width or size
        for first in range(start, start + n, batch_size):
            indices = list(range(first, min(first + batch_size, start + n)))
            cond = self.prompt_embeds(emotion, indices, seed, obj, fuse, mix)
            generators = [torch.Generator(self.pipe.device).manual_seed(seed + i) for i in indices]
            images = self.pipe(prompt_embeds=cond, negative_prompt_embeds=self.negative_embeds(len(indices)),
                               num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                               height=height, width=width).images
            for i, image in zip(indices, images):
                params = {"method": "emogen", "emotion": emotion, "object": obj, "fuse": fuse, "mix": mix,
                          "seed": seed, "index": i, "latent_seed": seed + i, "steps": steps, "guidance": guidance,
                          "scheduler": scheduler, "height": height, "width": width,
                          "prompt": self.prompt(emotion, fuse, mix, obj), "unadded_token": self.unadded_token,
                          **self.source}
                yield i, image, params


def run_config(run_dir: Path) -> dict:
    config_path = Path(run_dir) / "final" / RUN_CONFIG
    if not config_path.is_file():
        raise EmoError(f"{run_dir} is not a finished EmoGen run (no final/{RUN_CONFIG})")
    return json.loads(config_path.read_text())


def baseline_prompt(emotion: str, obj: str | None) -> str:
    return prompt_text([BASELINE_PROMPT.format(emotion=emotion)], obj)


class StableDiffusionBaseline:
    """Plain Stable Diffusion prompted "an image of {emotion}" (+ the object): Table 1's SD row, with
    EmoGen's sampling settings and per-image seeds, so the two folders differ only in the conditioning."""

    def __init__(self, pipe, source: dict | None = None):
        self.pipe, self.source = pipe, dict(source or {})

    def generate(self, emotion: str, n: int = 4, seed: int = 0, obj: str | None = None, fuse: str | None = None,
                 mix: float | None = None, steps: int = 50, guidance: float = 7.5, scheduler: str = "unipc",
                 height: int | None = None, width: int | None = None, batch_size: int = 4, start: int = 0):
        if fuse is not None or mix is not None:
            raise EmoError("the Stable Diffusion baseline has no emotion tokens to --fuse or --mix")
        emotion = EMOSET.validate(emotion)
        set_scheduler(self.pipe, scheduler)
        size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        height, width = height or size, width or size
        prompt = baseline_prompt(emotion, obj)
        for first in range(start, start + n, batch_size):
            indices = list(range(first, min(first + batch_size, start + n)))
            generators = [torch.Generator(self.pipe.device).manual_seed(seed + i) for i in indices]
            images = self.pipe([prompt] * len(indices), negative_prompt=[""] * len(indices),
                               num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                               height=height, width=width).images
            for i, image in zip(indices, images):
                yield i, image, {"method": "stable-diffusion", "emotion": emotion, "object": obj, "seed": seed,
                                 "index": i, "latent_seed": seed + i, "steps": steps, "guidance": guidance,
                                 "scheduler": scheduler, "height": height, "width": width, "prompt": prompt,
                                 **self.source}


def make_sampler(run=None, sd=None, mapper=None, space=None, text_encoder=None, baseline: bool = False,
                 device="cpu", dtype=torch.float32, allow_foreign_space: bool = False,
                 unadded_token: bool = False):
    """(sampler, default sampling settings) for `emo sample`'s three forms: --run, --sd/--mapper/--space,
    and --baseline --sd (plain Stable Diffusion)."""
    defaults = dict(SAMPLE_DEFAULTS)
    if baseline:
        if run is not None or mapper is not None or space is not None or unadded_token:
            raise EmoError("--baseline samples plain Stable Diffusion: give only --sd (and optionally "
                           "--text-encoder), not --run, --mapper, --space or --unadded-token")
        if not sd:
            raise EmoError("--baseline needs --sd MODEL (a Stable Diffusion folder or Hub id)")
        pipe = load_sd_pipeline(str(sd), text_encoder, dtype, device)
        return StableDiffusionBaseline(pipe, {"pretrained": str(sd), "text_encoder": text_encoder}), defaults
    options = {"allow_foreign_space": allow_foreign_space, "unadded_token": unadded_token}
    if run is not None:
        defaults.update(run_config(run).get("sample", {}))
        sampler = EmoGenSampler.from_run(run, device, dtype, emotion_space=str(space) if space else None, **options)
        return sampler, defaults
    if not (sd and mapper and space):
        raise EmoError("give --run RUN_DIR, all of --sd, --mapper and --space, or --baseline --sd MODEL")
    return EmoGenSampler.from_parts(sd, mapper, space, text_encoder, device, dtype, **options), defaults
