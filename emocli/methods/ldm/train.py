"""`emo train ldm`: a text-conditional latent diffusion UNet trained on captioned images (seed 004).

Frozen: a CLIP text encoder (its last hidden state conditions the UNet by cross-attention) and an SD
VAE (latents). Trained: a UNet2DConditionModel, new from `model.unet_config` or from a pretrained
folder. Per step: a caption per image (one of its captions, at random), replaced by "" with
probability `data.caption_dropout` (the very embedding sampling uses for guidance); a fresh latent
drawn from the image's VAE posterior; DDPM noise at a uniform timestep; MSE to epsilon or v
(optionally min-SNR weighted, optional offset noise). From `loss.lpips_from_epoch`: LPIPS between
the decoded x0-prediction and the decoded clean latent. From `loss.kl_from_epoch`: the latent KL of
docs/ldm.md. Latent distributions and text embeddings can be cached (`data.cache_*`), keyed by the
models' weights, so later runs reuse them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emocli.data.captions import PreparedCaptions
from emocli.errors import EmoError
from emocli.hub import load_pretrained, quiet_loading
from emocli.runs import Run, latest_checkpoint, write_json_atomic
from emocli.training import TrainTask, fit, make_accelerator, weight_dtype
from emocli.written import publish

log = logging.getLogger("emocli")

RUN_CONFIG = "ldm.json"


def load_frozen(m, dtype=torch.float32):
    """(tokenizer, text_encoder, vae) of the recipe's model section, frozen and in eval mode."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    quiet_loading()
    tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, m.text_encoder, "model.text_encoder",
                                what="CLIP tokenizer")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a full CLIPModel folder: its vision tower is expected to stay unused
    try:
        text_encoder = load_pretrained(CLIPTextModel.from_pretrained, m.text_encoder, "model.text_encoder",
                                       what="CLIP text encoder", dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    kwargs = {"subfolder": m.vae_subfolder} if m.vae_subfolder else {}
    vae = load_pretrained(AutoencoderKL.from_pretrained, m.vae, "model.vae", what="VAE", dtype=dtype, **kwargs)
    for part in (text_encoder, vae):
        part.requires_grad_(False).eval()
    return tokenizer, text_encoder, vae


def build_unet(m, cross_attention_dim: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    if m.unet:
        unet = load_pretrained(UNet2DConditionModel.from_pretrained, m.unet, "model.unet", what="UNet")
        if unet.config.cross_attention_dim != cross_attention_dim:
            raise EmoError(f"model.unet has cross_attention_dim {unet.config.cross_attention_dim}, the text encoder "
                           f"gives {cross_attention_dim}-d states")
        return unet
    c = m.unet_config
    return UNet2DConditionModel(
        sample_size=c.sample_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(c.block_out_channels), down_block_types=tuple(c.down_block_types),
        up_block_types=tuple(c.up_block_types), layers_per_block=c.layers_per_block,
        cross_attention_dim=cross_attention_dim, attention_head_dim=c.attention_head_dim,
        norm_num_groups=c.norm_num_groups,
    )


def noise_scheduler(m):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=m.num_train_timesteps, beta_schedule=m.beta_schedule,
                         beta_start=m.beta_start, beta_end=m.beta_end, prediction_type=m.prediction_type,
                         clip_sample=False, steps_offset=1)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Padded to the tokenizer's max length, as StableDiffusionPipeline pads prompts and "" at sampling."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def fingerprint(model) -> str:
    """An identity of a model's weights and config: sha256 over the config and per-tensor sums."""
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}  # not paths
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t = t.detach().double()
            h.update(f"{name}{tuple(t.shape)}{t.sum().item():.10e}{t.abs().sum().item():.10e}".encode())
    return h.hexdigest()[:16]


def vae_pixels(path: str, resolution: int, center_crop: bool) -> torch.Tensor:
    from emocli.methods.emogen.train import vae_pixels as pixels  # one VAE-input function for every method

    return pixels(path, resolution, center_crop)


class _Cache:
    """A .npy array (opened memory-mapped, never unpickled) with a JSON sidecar naming what it holds."""

    def __init__(self, folder: Path, kind: str, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = folder / f"{kind}-{digest}.npy"
        self.meta = folder / f"{kind}-{digest}.json"
        self.key = key

    def load(self):
        if self.path.is_file() and self.meta.is_file():
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        return None

    def save(self, array: np.ndarray):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".tmp-" + self.path.name)
        np.save(tmp, array, allow_pickle=False)
        publish(tmp, self.path)
        write_json_atomic(self.meta, self.key)


class _CaptionImages(torch.utils.data.Dataset):
    """Per item: the image's VAE input, or its cached latent distributions (every flip). Deterministic: the
    random choices (flip, which caption, dropout) are drawn in `LdmTask.loss`, from the RNG that checkpoints
    save, so a resumed run draws what the uninterrupted one drew (the loader fetches one batch ahead)."""

    def __init__(self, records, data, latents=None):
        self.records, self.data, self.latents = records, data, latents

    def __getstate__(self):  # DataLoader workers reopen the memory map instead of receiving a pickled copy
        state = dict(self.__dict__)
        if isinstance(self.latents, np.memmap):
            state["latents"] = ("memmap", self.latents.filename)
        return state

    def __setstate__(self, state):
        if isinstance(state.get("latents"), tuple):
            state["latents"] = np.load(state["latents"][1], mmap_mode="r", allow_pickle=False)
        self.__dict__.update(state)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        item = {"index": index}
        if self.latents is not None:
            item["latent_params"] = torch.from_numpy(np.array(self.latents[index]))
        else:
            item["pixel_values"] = vae_pixels(self.records[index]["image"], self.data.resolution, self.data.center_crop)
        return item


class LdmTask(TrainTask):
    def __init__(self, recipe, run: Run):
        self.recipe, self.run = recipe, run
        m, d = recipe.model, recipe.data
        self.records = PreparedCaptions(d.prepared).records("train")
        if d.max_samples:
            self.records = self.records[: d.max_samples]
        if not self.records:
            raise EmoError(f"{d.prepared} has an empty train split")
        self.tokenizer, self.text_encoder, self.vae = load_frozen(m)
        self.model = build_unet(m, self.text_encoder.config.hidden_size, self.vae.config.latent_channels)
        if m.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.noise_scheduler = noise_scheduler(m)
        self.lpips = None
        if recipe.loss.lpips_weight > 0:
            from emocli.metrics.lpips import LPIPS

            self.lpips = LPIPS.from_files(recipe.loss.lpips_backbone, recipe.loss.lpips_heads)
        self.train_dataset = None  # built in setup(), once the caches exist

    # -- setup: frozen parts to the device, caches, the dataset --
    def setup(self, accelerator):
        self.device, self.dtype = accelerator.device, weight_dtype(accelerator)
        for part in (self.text_encoder, self.vae):
            part.to(self.device)
            if self.dtype != torch.float32:  # AMP: frozen parts in the compute dtype
                part.to(dtype=self.dtype)
        if self.lpips is not None:
            self.lpips.to(self.device)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(self.device)
        with torch.no_grad():
            self.empty_hidden = self.text_encoder(tokenize(self.tokenizer, [""]).to(self.device))[0].float()
        d = self.recipe.data
        latents = self._cached_latents(accelerator) if d.cache_latents else None
        self.text, self.caption_rows = self._cached_text(accelerator) if d.cache_text else (None, None)
        self.train_dataset = _CaptionImages(self.records, d, latents)

    def _cache_folder(self) -> Path:
        d = self.recipe.data
        return Path(d.cache_dir) if d.cache_dir else PreparedCaptions(d.prepared).path / "cache"

    @torch.no_grad()
    def _cached_latents(self, accelerator):
        """[N, flips, 2C, h, w] float32: mean and logvar of each image's posterior (both flips when data.flip)."""
        d = self.recipe.data
        key = {"vae": fingerprint(self.vae), "dtype": str(self.dtype), "resolution": d.resolution,
               "center_crop": d.center_crop, "flips": 2 if d.flip else 1,
               "images": hashlib.sha256("\n".join(r["image"] for r in self.records).encode()).hexdigest()}
        cache = _Cache(self._cache_folder(), "latents", key)

        def encode(indices):
            images = torch.stack([vae_pixels(self.records[i]["image"], d.resolution, d.center_crop) for i in indices])
            images = images.to(self.device, self.dtype)
            views = (images, images.flip(-1)) if d.flip else (images,)
            return torch.stack([self.vae.encode(v).latent_dist.parameters.float() for v in views], dim=1)

        return self._build_cache(accelerator, cache, len(self.records), encode, "latents")

    @torch.no_grad()
    def _cached_text(self, accelerator):
        """[total captions, 77, hidden] float16 and each record's first row."""
        captions = [c for r in self.records for c in r["captions"]]
        rows = np.cumsum([0] + [len(r["captions"]) for r in self.records[:-1]]).tolist()
        key = {"text_encoder": fingerprint(self.text_encoder), "dtype": str(self.dtype),
               "captions": hashlib.sha256("\n".join(captions).encode()).hexdigest()}
        cache = _Cache(self._cache_folder(), "text", key)

        def encode(indices):
            ids = tokenize(self.tokenizer, [captions[i] for i in indices]).to(self.device)
            return self.text_encoder(ids)[0].half()

        return self._build_cache(accelerator, cache, len(captions), encode, "text embeddings"), rows

    def _build_cache(self, accelerator, cache: _Cache, count: int, encode, what: str):
        found = cache.load()
        if found is not None and found.shape[0] == count:
            log.info("%s loaded from %s", what, cache.path)
            return found
        from emocli.progress import track

        size = self.recipe.data.encoder_batch_size
        rank, world = accelerator.process_index, accelerator.num_processes
        chunks = [list(range(s, min(s + size, count))) for s in range(0, count, size)]
        mine = [torch.zeros(0)] * len(chunks)
        for j in track(range(rank, len(chunks), world), description=f"caching {what}",
                       enabled=accelerator.is_main_process):
            mine[j] = encode(chunks[j]).cpu()
        if world > 1:
            from accelerate.utils import gather_object

            shards = gather_object([(j, mine[j]) for j in range(rank, len(chunks), world)])
            for j, t in shards:
                mine[j] = t
        if accelerator.is_main_process:
            cache.save(torch.cat(mine).numpy())
            log.info("%s cached in %s", what, cache.path)
        accelerator.wait_for_everyone()
        return cache.load()

    # -- the training step --
    def aux_active(self) -> tuple[bool, bool]:
        loss = self.recipe.loss
        return (loss.lpips_weight > 0 and self.epoch >= loss.lpips_from_epoch,
                loss.kl_weight > 0 and self.epoch >= loss.kl_from_epoch)

    def loss(self, model, batch):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        recipe, sf = self.recipe, self.vae.config.scaling_factor
        indices = [int(i) for i in batch["index"]]
        n = len(indices)
        with torch.no_grad():
            flip = (torch.rand(n) < 0.5) if recipe.data.flip else torch.zeros(n, dtype=torch.bool)
            if "latent_params" in batch:
                params = batch["latent_params"].to(self.device, torch.float32)[torch.arange(n), flip.long()]
                dist = DiagonalGaussianDistribution(params)
            else:
                pixels = batch["pixel_values"].to(self.device, self.dtype)
                pixels = torch.where(flip.to(self.device)[:, None, None, None], pixels.flip(-1), pixels)
                dist = self.vae.encode(pixels).latent_dist
            latents = dist.sample().float() * sf
            picks = [int(torch.randint(0, len(self.records[i]["captions"]), ())) for i in indices]
            if self.text is not None:
                rows = [self.caption_rows[i] + k for i, k in zip(indices, picks)]
                hidden = torch.from_numpy(np.stack([self.text[r] for r in rows])).to(self.device).float()
            else:
                ids = tokenize(self.tokenizer, [self.records[i]["captions"][k] for i, k in zip(indices, picks)])
                hidden = self.text_encoder(ids.to(self.device))[0].float()
            drop = torch.rand(n, device=self.device) < recipe.data.caption_dropout
            hidden = torch.where(drop[:, None, None], self.empty_hidden.expand_as(hidden), hidden)
            noise = torch.randn_like(latents)
            if recipe.loss.noise_offset:
                noise = noise + recipe.loss.noise_offset * torch.randn(n, latents.shape[1], 1, 1, device=self.device)
            t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (n,), device=self.device)
            noisy = self.noise_scheduler.add_noise(latents, noise, t)
            v_pred = self.noise_scheduler.config.prediction_type == "v_prediction"
            target = self.noise_scheduler.get_velocity(latents, noise, t) if v_pred else noise
        pred = model(noisy, t, encoder_hidden_states=hidden).sample.float()
        mse = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        a = self.alphas_cumprod[t].float()
        if recipe.loss.snr_gamma:
            snr = a / (1 - a)
            weight = snr.clamp(max=recipe.loss.snr_gamma) / (snr + 1 if v_pred else snr)
            mse = mse * weight
        loss = mse.mean()
        logs = {"loss_mse": loss.item(), "caption_dropped": drop.float().mean().item()}
        use_lpips, use_kl = self.aux_active()
        if use_lpips or use_kl:
            a4 = a.view(-1, 1, 1, 1)
            x0 = a4.sqrt() * noisy - (1 - a4).sqrt() * pred if v_pred else (noisy - (1 - a4).sqrt() * pred) / a4.sqrt()
            if use_lpips:
                decoded = self.vae.decode((x0 / sf).to(self.dtype)).sample.float()
                with torch.no_grad():
                    real = self.vae.decode((latents / sf).to(self.dtype)).sample.float()
                l_lpips = self.lpips(decoded, real).mean()
                loss = loss + recipe.loss.lpips_weight * l_lpips
                logs["loss_lpips"] = l_lpips.item()
            if use_kl:
                l_kl = latent_kl(x0, latents)
                loss = loss + recipe.loss.kl_weight * l_kl
                logs["loss_kl"] = l_kl.item()
        return loss, logs

    # -- validation grid, export --
    def pipeline(self, unet, scheduler: str | None = None):
        from diffusers import StableDiffusionPipeline

        from emocli.methods.emogen.sample import set_scheduler

        pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                       unet=unet, scheduler=self.noise_scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return set_scheduler(pipe, scheduler or self.recipe.sample.scheduler)

    def evaluate(self, model, accelerator, step):
        if not accelerator.is_main_process:
            return None
        from emocli.samples import grid, save_png

        v = self.recipe.validation
        pipe = self.pipeline(accelerator.unwrap_model(model))
        rows, k = [], 0
        for prompt in v.prompts:
            generators = [torch.Generator(self.device).manual_seed(v.seed + k + i) for i in range(v.images_per_prompt)]
            k += v.images_per_prompt
            with accelerator.autocast():
                images = pipe([prompt] * v.images_per_prompt, num_inference_steps=v.steps,
                              guidance_scale=self.recipe.sample.guidance, generator=generators).images
            rows.append((prompt[:40], images))
        picture = grid(rows, cell=max(64, min(256, rows[0][1][0].width)), label_width=240)
        path = self.run.dir / "samples" / f"step-{step:06d}.png"
        path.parent.mkdir(exist_ok=True)
        save_png(picture, path)
        try:
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("validation", np.asarray(picture), step, dataformats="HWC")
        except (ValueError, AttributeError, ImportError):  # no tensorboard tracker in this run
            pass
        log.info("validation grid: %s", path)
        return None

    def save_pretrained(self, model, directory, state_dict=None):
        save_unet(model, Path(directory) / "unet", state_dict)

    def finish(self, model, accelerator, run: Run):
        if not accelerator.is_main_process:
            return
        recipe = self.recipe
        write_pipeline(self, model, run.final / "model")
        ema = recipe.train.ema
        ckpt = latest_checkpoint(run.dir)
        if ema is not None and ckpt is not None:
            if ema.export:  # final/model holds the EMA weights; the raw ones go beside them
                shutil.copytree(ckpt / "model" / "unet", run.final / "unet_raw", dirs_exist_ok=True)
            else:
                from safetensors.torch import load_file

                state = {**model.state_dict(), **load_file(str(ckpt / "ema.safetensors"))}
                save_unet(model, run.final / "unet_ema", state)
        best = run.dir / "best" / "model"
        if (best / "unet").is_dir() and not (best / "model_index.json").is_file():
            from diffusers import UNet2DConditionModel

            write_pipeline(self, UNet2DConditionModel.from_pretrained(best / "unet"), best)
        write_json_atomic(run.final / RUN_CONFIG, {
            "method": "ldm", "text_encoder": recipe.model.text_encoder, "vae": recipe.model.vae,
            "prediction_type": recipe.model.prediction_type, "resolution": recipe.data.resolution,
            "sample": recipe.sample.model_dump(), "pipeline": "final/model",
        })
        log.info('LDM run ready: emo sample --run %s --prompt "..." --out samples/', run.dir)


def latent_kl(x0: torch.Tensor, latents: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(N(mu_p, var_p) || N(mu_t, var_t)) per latent channel, averaged over channels: Gaussians fitted
    over (batch, height, width) to the predicted clean latents (p) and the true ones (t, no gradient)."""
    dims = (0, 2, 3)
    mu_p, var_p = x0.mean(dim=dims), x0.var(dim=dims, unbiased=False) + eps
    mu_t, var_t = latents.mean(dim=dims), latents.var(dim=dims, unbiased=False) + eps
    kl = 0.5 * (torch.log(var_t / var_p) + (var_p + (mu_p - mu_t) ** 2) / var_t - 1)
    return kl.mean()


def save_unet(model, directory: Path, state_dict: dict | None = None) -> None:
    """A diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors) from `state_dict`
    (the model's own when None; EMA weights when the loop exports them)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.save_config(directory)
    state = state_dict if state_dict is not None else model.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(directory / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def write_pipeline(task: LdmTask, unet, directory: Path) -> None:
    """A StableDiffusionPipeline folder (no safety checker) with the recipe's sampler as its scheduler; the
    frozen parts are reloaded from their sources so they keep their own precision. Written aside, then renamed."""
    tokenizer, text_encoder, vae = load_frozen(task.recipe.model)
    from diffusers import StableDiffusionPipeline

    from emocli.methods.emogen.sample import set_scheduler

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=task.noise_scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    set_scheduler(pipe, task.recipe.sample.scheduler)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(directory, ignore_errors=True)
    publish(tmp, directory)


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = LdmTask(run.recipe, run)
    fit(task, run, accelerator, resume=resume)
