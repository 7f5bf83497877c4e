"""`emo train emogen`: stage 2, the mapping network against frozen Stable Diffusion components.

Per sample: the emotion vector of the training image (frozen stage-1 encoder, computed once)
goes through the mapper; the result replaces the placeholder token of the prompt "<emotion>"
inside the frozen text encoder (emocli.methods.emogen.injection); the frozen UNet denoises the
image latents under that conditioning. Loss per sample, batched (the original used batch 1):

    (1 - alpha) * L_diffusion + attr_weight * alpha * L_attr + emo_weight * L_emo

alpha = emotion confidence of (label, attribute); L_attr = cross-entropy over the cosine
similarities (times attr_logit_scale) between the CLIP-projected pooled text feature and the CLIP
text features of the attribute vocabulary; L_emo = cross-entropy of an emotion head on the same
projected feature. The pooled feature is the placeholder token's hidden state by default (what the
original's argmax pooling read, see `pooled_feature`). Only the mapper has trainable parameters;
of CLIP only the text tower and its projection are loaded (the vision tower is never used).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from emocli.data.emoset import EmoSetImages, load_rgb
from emocli.data.transforms import image_transform
from emocli.emotion_space import EmotionSpace
from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.hub import load_pretrained
from emocli.methods.emogen.injection import add_placeholders, encode_with_vectors, tokenize
from emocli.methods.emogen.mapper import Mapper
from emocli.methods.emogen.sample import RUN_CONFIG, EmoGenSampler, load_sd_pipeline
from emocli.runs import Run, write_json_atomic
from emocli.samples import grid, save_png
from emocli.training import TrainTask, fit, make_accelerator
from emocli.written import publish

log = logging.getLogger("emocli")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise EmoError(f"{path} is missing ({what}); run `emo data prepare emoset` / `emo data alpha` first")
    return path


def load_training_samples(data) -> tuple[list[dict], list[str]]:
    """The balanced training list of a prepared EmoSet, with per-sample attribute index and alpha."""
    prepared = Path(data.prepared)
    if not (prepared / "prepare.json").is_file():
        raise EmoError(f"{prepared} is not a prepared EmoSet folder (no prepare.json); run `emo data prepare emoset`")
    records = {r["id"]: r for r in _read_jsonl(prepared / "records.jsonl")}
    attributes = {a["id"]: a for a in _read_jsonl(prepared / "attributes.jsonl")}
    alpha = json.loads(_need(Path(data.alpha) if data.alpha else prepared / "alpha.json", "alpha table").read_text())
    vocab_file = Path(data.attribute_vocab) if data.attribute_vocab else prepared / "attribute_vocab.json"
    vocabulary = json.loads(_need(vocab_file, "attribute vocabulary").read_text())["vocabulary"]
    vocab_index = {name: i for i, name in enumerate(vocabulary)}
    samples = []
    for prop in data.properties:
        suffix = "_filtered" if data.balanced == "filtered" else ""
        ids = json.loads(_need(prepared / "balanced" / f"{prop}{suffix}.json", "balanced list").read_text())
        table = alpha.get(prop, {})
        for image_id in ids:
            rec, attr = records[image_id], attributes.get(image_id, {})
            name = attr.get("attribute")
            row = table.get(name) if name else None
            samples.append({
                "id": image_id, "image": rec["image"], "label": int(rec["label"]), "property": prop,
                "attribute": name, "attr_index": vocab_index.get(name, -1),
                "alpha": float(row[int(rec["label"])]) if row is not None else 0.0,
            })
    if data.max_samples:
        samples = samples[: data.max_samples]
    if not samples:
        raise EmoError(f"{prepared} has no balanced training samples for properties {data.properties}")
    return samples, vocabulary


def pooled_feature(text_output, input_ids: torch.Tensor, placeholder_id: int, position: str) -> torch.Tensor:
    """The text feature the attribute and emotion losses project: [batch, hidden].

    "placeholder": the final-layer-norm hidden state at the placeholder token. The original added its
    placeholder as the last (largest) token id, and CLIP pools at argmax(input_ids), so its pooled
    output was the placeholder's state. "eos": the encoder's own pooler_output (end-of-text).
    """
    if position == "eos":
        return text_output.pooler_output
    if position != "placeholder":
        raise EmoError(f"unknown loss.pooled_token {position!r}; valid: placeholder, eos")
    first = (input_ids == placeholder_id).int().argmax(dim=1)
    return text_output.last_hidden_state[torch.arange(input_ids.shape[0], device=input_ids.device), first]


def attribute_texts(vocabulary: list[str], mode: str) -> list[str]:
    """The CLIP text of each attribute: raw names (underscores kept, as the original) or with spaces."""
    return list(vocabulary) if mode == "raw" else [name.replace("_", " ") for name in vocabulary]


def emotion_space_source(encoder_path: str) -> Path:
    """Where the emotion space of an emotion-encoder run lies: RUN/final for a run, the folder above
    final/model when model.emotion_encoder names the model folder itself."""
    path = Path(encoder_path)
    if (path / "final").is_dir():
        return path / "final"
    if path.name == "model" and path.parent.name == "final":
        return path.parent
    return path


def vae_pixels(path: str, resolution: int, center_crop: bool) -> torch.Tensor:
    """The VAE's input in [-1, 1]: squashed to a square like the original, or resized + centre-cropped."""
    image = load_rgb(path)
    if center_crop:
        return image_transform(resolution, crop=resolution, mean=(0.5,) * 3, std=(0.5,) * 3)(image)
    image = image.resize((resolution, resolution), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    return pixels.permute(2, 0, 1).float() / 127.5 - 1.0


class _EmoGenImages(torch.utils.data.Dataset):
    """Per sample: the cached emotion vector, alpha, attribute, and the VAE image (random flip) or its
    cached latent distribution."""

    def __init__(self, samples, vectors: torch.Tensor, row_of: dict[str, int], resolution: int,
                 center_crop: bool, flip: bool, latents: torch.Tensor | None):
        self.samples, self.vectors, self.row_of = samples, vectors, row_of
        self.resolution, self.center_crop, self.flip, self.latents = resolution, center_crop, flip, latents

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        s = self.samples[index]
        row = self.row_of[s["id"]]
        flip = self.flip and bool(torch.randint(0, 2, ()).item())
        item = {"emotion_vector": self.vectors[row], "attr_index": s["attr_index"], "alpha": s["alpha"],
                "label": s["label"], "index": index}
        if self.latents is not None:
            item["latent_dist"] = self.latents[row, int(flip)]
            return item
        pixels = vae_pixels(s["image"], self.resolution, self.center_crop)
        item["pixel_values"] = pixels.flip(-1) if flip else pixels
        return item


class EmoGenTask(TrainTask):
    def __init__(self, recipe, run: Run):
        self.recipe, self.run = recipe, run
        m = recipe.model
        if not m.emotion_encoder:
            raise EmoError("model.emotion_encoder must name an `emo train emotion-encoder` run (or its final/model)")
        self.samples, self.vocabulary = load_training_samples(recipe.data)
        self.pipe = load_sd_pipeline(m.pretrained, m.text_encoder)
        for part in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            part.requires_grad_(False)
            part.eval()
        if m.gradient_checkpointing:
            self.pipe.unet.enable_gradient_checkpointing()
        if m.text_encoder_gradient_checkpointing:
            # transformers checkpoints only modules in train mode; CLIP's text tower has no dropout,
            # so train mode changes nothing else.
            self.pipe.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.pipe.text_encoder.train()
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.placeholder_id = add_placeholders(self.pipe.tokenizer, [m.placeholder])[0]
        self.prompt_ids = tokenize(self.pipe.tokenizer, [m.placeholder])
        from emocli.methods.emotion_encoder.model import EmotionEncoder

        self.encoder = EmotionEncoder.from_pretrained(m.emotion_encoder).requires_grad_(False)
        fingerprint = self.encoder.fingerprint()
        hidden = self.pipe.text_encoder.get_input_embeddings().embedding_dim
        self.model = Mapper(in_dim=self.encoder.meta["emotion_dim"], out_dim=hidden, encoder=fingerprint,
                            **m.mapper.model_dump())
        space_source = m.emotion_space or str(emotion_space_source(m.emotion_encoder))
        self.space = EmotionSpace.load(space_source, expect_dim=self.encoder.meta["emotion_dim"])
        self.space.check_encoder(fingerprint, m.allow_foreign_space, space_source, "model.allow_foreign_space=true")
        self.clip = None
        if recipe.loss.attr_weight > 0 or recipe.loss.emo_weight > 0:
            from transformers import CLIPTextModelWithProjection, CLIPTokenizer
            from transformers.utils import logging as hf_logging

            # Only the text tower and text_projection of model.clip (a full CLIPModel folder or Hub id);
            # transformers would list every skipped vision weight as "unexpected".
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                self.clip = load_pretrained(CLIPTextModelWithProjection.from_pretrained, m.clip, "model.clip",
                                            what="CLIP text tower").requires_grad_(False).eval()
            finally:
                hf_logging.set_verbosity(verbosity)
            self.clip_tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, m.clip, "model.clip", what="CLIP tokenizer")
            if self.clip.text_projection.in_features != hidden:
                raise EmoError(f"model.clip's text projection takes {self.clip.text_projection.in_features}-d "
                               f"features, but the SD text encoder is {hidden}-d: use the CLIP model whose text "
                               f"tower SD uses (CLIP ViT-L/14 for SD 1.5)")
        self.emotion_head = None
        if recipe.loss.emo_weight > 0:
            self.emotion_head = self._load_emotion_head(recipe.loss.emotion_head)
        self.collate_fn = None
        self.train_dataset = None  # built in setup(), once the emotion vectors exist

    def _load_emotion_head(self, path: str | None):
        """Linear(projection_dim -> 8): safetensors with weight/bias, or the official .pth (read safely)."""
        if not path:
            raise EmoError("loss.emo_weight > 0 needs loss.emotion_head (e.g. an imported emotion_head.safetensors)")
        if not Path(path).is_file():
            raise EmoError(f"loss.emotion_head file {path!r} does not exist")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            from emocli.safeload import load_weights_only

            state = load_weights_only(path, what="loss.emotion_head file")
        state = {k.split(".")[-1]: v for k, v in state.items()}
        weight, bias = state["weight"].float(), state.get("bias")
        head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        head.load_state_dict({"weight": weight, **({"bias": bias.float()} if bias is not None else {})})
        if head.in_features != self.clip.text_projection.out_features:
            raise EmoError(f"loss.emotion_head takes {head.in_features}-d features, the CLIP projection gives "
                           f"{self.clip.text_projection.out_features}")
        return head.requires_grad_(False).eval()

    # -- setup: frozen parts to the device, attribute features, emotion vectors (and latents) once --
    def setup(self, accelerator):
        from emocli.training import weight_dtype

        dtype = weight_dtype(accelerator)
        self.device, self.dtype = accelerator.device, dtype
        self.pipe.to(accelerator.device)
        if dtype != torch.float32:
            self.pipe.to(dtype=dtype)
        self.prompt_ids = self.prompt_ids.to(accelerator.device)
        self.encoder.to(accelerator.device)
        if self.clip is not None:
            self.clip.to(accelerator.device)
            with torch.no_grad():
                texts = attribute_texts(self.vocabulary, self.recipe.loss.attr_text)
                ids = self.clip_tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(accelerator.device)
                self.attr_features = F.normalize(self.clip(**ids).text_embeds.float(), dim=-1)
        if self.emotion_head is not None:
            self.emotion_head.to(accelerator.device)
        unique = {}
        for s in self.samples:
            unique.setdefault(s["id"], s["image"])
        ids = list(unique)
        vectors, latents = self._precompute(accelerator, [{"id": i, "image": unique[i], "label": 0} for i in ids])
        row_of = {image_id: row for row, image_id in enumerate(ids)}
        d = self.recipe.data
        self.train_dataset = _EmoGenImages(self.samples, vectors, row_of, d.resolution, d.center_crop, d.flip, latents)

    @torch.no_grad()
    def _precompute(self, accelerator, records):
        """Emotion vectors [U, D] (and latent distributions [U, 2 flips, 2C, h, w]) of the unique images,
        sharded over processes; cached in the run directory for resume."""
        cache = self.run.dir / "cache" / "emogen_precomputed.safetensors"
        want_latents = self.recipe.data.cache_latents
        if cache.is_file():
            from safetensors.torch import load_file

            saved = load_file(str(cache))
            if saved["vectors"].shape[0] == len(records) and ("latents" in saved) == want_latents:
                log.info("emotion vectors%s loaded from %s", " and latents" if want_latents else "", cache)
                return saved["vectors"], saved.get("latents")
        pre = self.encoder.meta.get("preprocess", {})
        transform = image_transform(pre.get("resize", 256), crop=pre.get("image_size", 224),
                                    mean=pre.get("mean", (0.5,) * 3), std=pre.get("std", (0.5,) * 3))
        dataset = EmoSetImages(records, transform)
        loader = accelerator.prepare_data_loader(torch.utils.data.DataLoader(
            dataset, batch_size=self.recipe.data.encoder_batch_size))
        vectors, latents, order = [], [], []
        from emocli.progress import track

        for batch in track(loader, description="emotion vectors", enabled=accelerator.is_main_process):
            vec = self.encoder.represent(batch["pixel_values"].to(accelerator.device)).float()
            out = [vec, batch["index"].to(accelerator.device)]
            if want_latents:
                d = self.recipe.data
                images = torch.stack([vae_pixels(records[int(i)]["image"], d.resolution, d.center_crop)
                                      for i in batch["index"]])
                images = images.to(accelerator.device, self.dtype)
                both = []
                for flipped in (images, images.flip(-1)):
                    dist = self.pipe.vae.encode(flipped).latent_dist
                    both.append(torch.cat([dist.mean, dist.std], dim=1).float())
                out.append(torch.stack(both, dim=1))
            gathered = accelerator.gather_for_metrics(tuple(out))
            vectors.append(gathered[0].cpu())
            order.append(gathered[1].cpu())
            if want_latents:
                latents.append(gathered[2].cpu())
        order = torch.cat(order)
        vectors = torch.cat(vectors)[order.argsort()]
        latents = torch.cat(latents)[order.argsort()] if want_latents else None
        if accelerator.is_main_process:
            from safetensors.torch import save_file

            cache.parent.mkdir(parents=True, exist_ok=True)
            tensors = {"vectors": vectors.contiguous()}
            if latents is not None:
                tensors["latents"] = latents.contiguous()
            tmp = cache.with_name(".tmp-" + cache.name)
            save_file(tensors, str(tmp))
            publish(tmp, cache)
        return vectors, latents

    # -- the training step --
    def loss(self, model, batch):
        recipe = self.recipe
        vectors = batch["emotion_vector"].to(self.device)
        tokens = model(vectors)  # [B, hidden]: the only trainable path
        batch_size = tokens.shape[0]
        ids = self.prompt_ids.expand(batch_size, -1)
        text = encode_with_vectors(self.pipe.text_encoder, ids, {self.placeholder_id: tokens})
        hidden = text.last_hidden_state
        pooled = pooled_feature(text, ids, self.placeholder_id, recipe.loss.pooled_token)

        with torch.no_grad():
            if "latent_dist" in batch:
                mean, std = batch["latent_dist"].to(self.device).chunk(2, dim=1)
                latents = mean + std * torch.randn_like(std)
            else:
                latents = self.pipe.vae.encode(batch["pixel_values"].to(self.device, self.dtype)).latent_dist.sample()
            latents = latents.to(self.dtype) * self.pipe.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            steps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (batch_size,), device=self.device)
            noisy = self.noise_scheduler.add_noise(latents, noise, steps)
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                target = self.noise_scheduler.get_velocity(latents, noise, steps)
            else:
                target = noise
        pred = self.pipe.unet(noisy, steps, encoder_hidden_states=hidden.to(self.dtype)).sample
        l_diff = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

        alpha = batch["alpha"].to(self.device).float()
        alpha = torch.where(alpha < recipe.loss.alpha_threshold, torch.zeros_like(alpha), alpha)
        loss = (1 - alpha) * l_diff
        logs = {"loss_diffusion": l_diff.mean().item(), "alpha": alpha.mean().item()}
        if self.clip is not None:
            projected = self.clip.text_projection(pooled.to(self.clip.text_projection.weight.dtype)).float()
            if recipe.loss.attr_weight > 0:
                logits = recipe.loss.attr_logit_scale * F.normalize(projected, dim=-1) @ self.attr_features.T
                attr = batch["attr_index"].to(self.device)
                l_attr = F.cross_entropy(logits, attr.clamp(min=0), reduction="none") * (attr >= 0)
                loss = loss + recipe.loss.attr_weight * alpha * l_attr
                logs["loss_attr"] = l_attr.mean().item()
            if self.emotion_head is not None:
                l_emo = F.cross_entropy(self.emotion_head(projected), batch["label"].to(self.device), reduction="none")
                loss = loss + recipe.loss.emo_weight * l_emo
                logs["loss_emo"] = l_emo.mean().item()
        return loss.mean(), logs

    # -- validation images, export --
    def evaluate(self, model, accelerator, step):
        if not accelerator.is_main_process:
            return None
        v = self.recipe.validation
        mapper = accelerator.unwrap_model(model)
        sampler = EmoGenSampler(self.pipe, mapper, self.space, allow_foreign_space=True)  # checked in __init__
        rows = []
        for emotion in v.emotions:
            images = [img for _, img, _ in sampler.generate(emotion, n=2, seed=v.seed, steps=v.steps,
                                                            guidance=self.recipe.sample.guidance,
                                                            scheduler=self.recipe.sample.scheduler)]
            rows.append((emotion, images))
        path = self.run.dir / "samples" / f"step-{step:06d}.png"
        path.parent.mkdir(exist_ok=True)
        save_png(grid(rows), path)
        log.info("validation images: %s", path)
        return None

    def save_pretrained(self, model, directory, state_dict=None):
        model.save_pretrained(directory, state_dict=state_dict)

    def finish(self, model, accelerator, run: Run):
        if not accelerator.is_main_process:
            return
        m = self.recipe.model
        self.space.save(run.final)
        write_json_atomic(run.final / RUN_CONFIG, {
            "pretrained": m.pretrained, "text_encoder": m.text_encoder, "placeholder": m.placeholder,
            "emotion_dim": self.space.dim, "emotion_encoder": self.model.config["encoder"], "emotions": list(EMOSET.labels),
            "sample": self.recipe.sample.model_dump(),
        })
        log.info("EmoGen run ready: emo sample --run %s --emotion fear --out samples/", run.dir)


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = EmoGenTask(run.recipe, run)
    fit(task, run, accelerator, resume=resume)
