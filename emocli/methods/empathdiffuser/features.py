"""UniDiffuser's encodings of faces and texts, exactly as its pipeline makes them, cached on disk.

    face  -> VAE latent distribution (mean, std); a fresh sample x vae.config.scaling_factor (0.18215 for
             SD's VAE) is drawn at every training step, as UniDiffuser's `encode_image_vae_latents`
    face  -> CLIP ViT-B/32 `image_embeds` (projection output, not normalised) [1, 512]
    text  -> CLIP ViT-L/14 text `last_hidden_state` (padded to 77) -> the caption decoder's pretrained
             `encode_prefix` -> [77, 64]

The cache file's name carries a digest of the model identity (the pretrained folder or id and its
weight files' sizes and times) and the resolution, so another model or size never reads stale features.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from emocli.errors import EmoError
from emocli.written import publish

log = logging.getLogger("emocli")


@dataclass
class UniDiffuserParts:
    """The frozen pieces of a UniDiffuser pipeline folder, loaded one by one (no deprecated pipeline)."""

    source: str
    vae: object
    image_encoder: object
    image_processor: object
    text_encoder: object
    clip_tokenizer: object
    text_decoder: object
    text_tokenizer: object
    scheduler_config: dict

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_size(self, resolution: int) -> int:
        if resolution % self.vae_factor:
            raise EmoError(f"data.resolution {resolution} is not a multiple of the VAE's factor {self.vae_factor}")
        return resolution // self.vae_factor

    def to(self, device, dtype=None):
        for part in (self.vae, self.image_encoder, self.text_encoder, self.text_decoder):
            part.to(device=device, dtype=dtype) if dtype is not None else part.to(device)
        return self


def load_parts(source: str, recipe_key: str = "model.pretrained") -> UniDiffuserParts:
    from diffusers import AutoencoderKL
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
        GPT2Tokenizer,
    )

    from emocli.hub import load_pretrained, quiet_loading
    from emocli.methods.empathdiffuser.model import unidiffuser_classes

    quiet_loading()
    _, UniDiffuserTextDecoder = unidiffuser_classes()

    def part(loader, sub, what, **kw):
        return load_pretrained(loader, source, recipe_key, what=f"UniDiffuser {what}", subfolder=sub, **kw)

    parts = UniDiffuserParts(
        source=str(source),
        vae=part(AutoencoderKL.from_pretrained, "vae", "VAE").eval().requires_grad_(False),
        image_encoder=part(CLIPVisionModelWithProjection.from_pretrained, "image_encoder", "image encoder")
        .eval().requires_grad_(False),
        image_processor=part(CLIPImageProcessor.from_pretrained, "clip_image_processor", "image processor"),
        text_encoder=part(CLIPTextModel.from_pretrained, "text_encoder", "text encoder").eval().requires_grad_(False),
        clip_tokenizer=part(CLIPTokenizer.from_pretrained, "clip_tokenizer", "CLIP tokenizer"),
        text_decoder=part(UniDiffuserTextDecoder.from_pretrained, "text_decoder", "caption decoder")
        .eval().requires_grad_(False),
        text_tokenizer=part(GPT2Tokenizer.from_pretrained, "text_tokenizer", "GPT-2 tokenizer"),
        scheduler_config=_scheduler_config(source),
    )
    if parts.text_encoder.config.hidden_size != parts.text_decoder.prefix_inner_dim:
        raise EmoError(f"{source}: the CLIP text encoder is {parts.text_encoder.config.hidden_size}-d but the caption "
                       f"decoder's encode_prefix takes {parts.text_decoder.prefix_inner_dim}-d states")
    return parts


def _scheduler_config(source: str) -> dict:
    from diffusers import DPMSolverMultistepScheduler

    from emocli.hub import load_pretrained

    scheduler = load_pretrained(DPMSolverMultistepScheduler.from_pretrained, source, "model.pretrained",
                                what="UniDiffuser scheduler", subfolder="scheduler")
    return dict(scheduler.config)


def model_identity(source: str, resolution: int) -> dict:
    """What the cached features depend on: the model (path or id + weight files' size and mtime) and size."""
    path = Path(source).expanduser()
    files = {}
    if path.is_dir():
        for sub in ("vae", "image_encoder", "text_encoder", "text_decoder", "clip_image_processor", "clip_tokenizer"):
            for f in sorted((path / sub).glob("*")):
                if f.is_file():
                    st = f.stat()
                    files[f"{sub}/{f.name}"] = [st.st_size, int(st.st_mtime)]
        source = str(path.resolve())
    return {"source": source, "files": files, "resolution": int(resolution), "format": "empathdiffuser-features/1"}


def face_pixels(path: str, resolution: int) -> torch.Tensor:
    """The VAE input in [-1, 1]: the frame resized (bicubic) to a square of `resolution`."""
    from PIL import Image

    from emocli.data.emoset import load_rgb

    image = load_rgb(path).resize((resolution, resolution), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    return pixels.permute(2, 0, 1).float() / 127.5 - 1.0


@torch.no_grad()
def encode_faces(parts: UniDiffuserParts, paths: list[str], resolution: int, device) -> dict[str, torch.Tensor]:
    """{"latent_mean", "latent_std": [N, C, h, w] (unscaled), "clip": [N, 1, dc]} of face files."""
    from emocli.data.emoset import load_rgb

    pixels = torch.stack([face_pixels(p, resolution) for p in paths]).to(device, parts.vae.dtype)
    dist = parts.vae.encode(pixels).latent_dist
    inputs = parts.image_processor(images=[load_rgb(p) for p in paths], return_tensors="pt")
    clip = parts.image_encoder(pixel_values=inputs.pixel_values.to(device, parts.image_encoder.dtype)).image_embeds
    return {"latent_mean": dist.mean.float().cpu(), "latent_std": dist.std.float().cpu(),
            "clip": clip.float().cpu().unsqueeze(1)}


@torch.no_grad()
def encode_texts(parts: UniDiffuserParts, texts: list[str], device) -> torch.Tensor:
    """[N, 77, dt]: CLIP text states (padded to 77) through the pretrained encode_prefix."""
    ids = parts.clip_tokenizer(texts, padding="max_length", max_length=parts.clip_tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids.to(device)
    states = parts.text_encoder(ids).last_hidden_state
    return parts.text_decoder.encode(states.to(parts.text_decoder.encode_prefix.weight.dtype)).float().cpu()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, scaling_factor: float, generator=None) -> torch.Tensor:
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + std * noise) * scaling_factor


class FeatureTable:
    """Encodings of the unique faces and texts of a list of pairs, read from or added to one cache file."""

    def __init__(self, faces: dict[str, torch.Tensor], texts: torch.Tensor, face_row: dict[str, int],
                 text_row: dict[str, int]):
        self.faces, self.texts, self.face_row, self.text_row = faces, texts, face_row, text_row

    @classmethod
    def build(cls, parts: UniDiffuserParts, samples: list[dict], resolution: int, cache_dir: Path, device,
              batch_size: int = 32, enabled: bool = True) -> FeatureTable:
        from safetensors.torch import load_file, save_file

        from emocli.evaluation.cache import digest
        from emocli.progress import track

        identity = model_identity(parts.source, resolution)
        path = Path(cache_dir) / f"empathdiffuser-{digest(identity)}.safetensors"
        faces = sorted({s[k] for s in samples for k in ("speaker_image", "listener_image")})
        texts = sorted({s[k] for s in samples for k in ("speaker_utterance", "response")})
        stored_faces, stored_texts, tensors = [], [], {}
        if path.is_file():
            try:
                tensors = load_file(str(path))
                index = json.loads(path.with_suffix(".json").read_text())
                stored_faces, stored_texts = index["faces"], index["texts"]
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable feature cache %s (%s)", path, e)
                tensors, stored_faces, stored_texts = {}, [], []
        face_row = {k: i for i, k in enumerate(stored_faces)}
        text_row = {k: i for i, k in enumerate(stored_texts)}
        new_faces = [f for f in faces if f not in face_row]
        new_texts = [t for t in texts if t not in text_row]
        if new_faces or new_texts:
            parts_faces = {k: [tensors[k]] if k in tensors else [] for k in ("latent_mean", "latent_std", "clip")}
            for start in track(range(0, len(new_faces), batch_size), description="encoding faces",
                               total=-(-len(new_faces) // batch_size), enabled=enabled):
                chunk = new_faces[start:start + batch_size]
                for k, v in encode_faces(parts, chunk, resolution, device).items():
                    parts_faces[k].append(v)
            text_parts = [tensors["texts"]] if "texts" in tensors else []
            for start in track(range(0, len(new_texts), batch_size), description="encoding texts",
                               total=-(-len(new_texts) // batch_size), enabled=enabled):
                text_parts.append(encode_texts(parts, new_texts[start:start + batch_size], device))
            tensors = {k: torch.cat(v) for k, v in parts_faces.items() if v}
            if text_parts:
                tensors["texts"] = torch.cat(text_parts)
            stored_faces, stored_texts = stored_faces + new_faces, stored_texts + new_texts
            face_row = {k: i for i, k in enumerate(stored_faces)}
            text_row = {k: i for i, k in enumerate(stored_texts)}
            if enabled:  # the main process writes
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(".tmp-" + path.name)
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
                path.with_suffix(".json").write_text(json.dumps({"identity": identity, "faces": stored_faces,
                                                                  "texts": stored_texts}))
                publish(tmp, path)
            log.info("features: %d new faces, %d new texts encoded -> %s", len(new_faces), len(new_texts), path)
        else:
            log.info("features of %d faces and %d texts read from %s", len(faces), len(texts), path)
        face_tensors = {k: tensors[k] for k in ("latent_mean", "latent_std", "clip")}
        return cls(face_tensors, tensors["texts"], face_row, text_row)

    def face(self, path: str) -> dict[str, torch.Tensor]:
        row = self.face_row[path]
        return {k: v[row] for k, v in self.faces.items()}

    def text(self, text: str) -> torch.Tensor:
        return self.texts[self.text_row[text]]
