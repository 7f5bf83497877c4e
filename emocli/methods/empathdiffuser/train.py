"""`emo train empathdiffuser`: fine-tune UniDiffuser into EmpathDiffuser on prepared AvaMERG pairs.

Per step (a batch of B speaker/listener pairs, features from features.py):
  diffusion  the listener response (VAE latents + CLIP embedding at t_x, text latents at t_y, t_x and
             t_y drawn independently from 1..1000 as UniDiffuser) is noised and its noise predicted given
             the clean speaker condition, which is replaced by the null tokens for a share
             `model.condition_dropout` of the samples; MSE over all response outputs (UniDiffuser's loss).
  emotion    the same batch again with the response tokens pure noise at t = 1000 (what exists at test
             time): cross-entropy of the [EMO] head against the speaker's coarse emotion, x loss.emotion_weight.
  decoder    (model.finetune_text_decoder) teacher-forced GPT-2 loss of the response given its clean text
             latents (decode_prefix + GPT-2 train; encode_prefix stays frozen).
Both passes run as one forward of 2B sequences. Validation: emotion accuracy / macro-F1 on val pairs,
and the distance of generated listener latents to their own target vs a target of another emotion.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from emocli.emotions import AVAMERG_COARSE
from emocli.errors import EmoError
from emocli.runs import Run, write_json_atomic
from emocli.training import TrainTask, fit, make_accelerator

log = logging.getLogger("emocli")


def preflight(recipe) -> None:
    """Fast input checks before the run directory exists (the shared ones plus the prepared AvaMERG folder);
    every problem is reported at once."""
    from emocli import preflight as pf

    pf.check_all(lambda: _prepared_avamerg(recipe.data.prepared, recipe.data.train_split),
                 lambda: pf.model_source(recipe.model.pretrained, "model.pretrained", "UniDiffuser pipeline"),
                 *pf.train_checks(recipe))


def _prepared_avamerg(path: str, split: str, split_key: str = "data.train_split") -> None:
    import json

    prepared = Path(path).expanduser()
    manifest = prepared / "prepare.json"
    if not manifest.is_file():
        raise EmoError(f"data.prepared {prepared} is not a prepared AvaMERG folder (no prepare.json); make one "
                       f"with `emo data prepare avamerg --source ... --media ... --out ...`")
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise EmoError(f"cannot read {manifest}: {e}") from None
    if m.get("format") != "emo-prepared-avamerg/1":
        raise EmoError(f"data.prepared {prepared} is a {m.get('format')!r} folder, not a prepared AvaMERG one")
    if not m.get("counts", {}).get("per_split", {}).get(split):
        raise EmoError(f"data.prepared {prepared} has no {split!r} pairs (recipe key {split_key})")


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    """UniDiffuser's schedule: SD's scaled-linear betas over 1000 steps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config).alphas_cumprod.float()


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return index


class EmpathDiffuserTask(TrainTask):
    def __init__(self, recipe, run: Run):
        from emocli.data.avamerg import read_prepared
        from emocli.methods.empathdiffuser.features import load_parts
        from emocli.methods.empathdiffuser.model import (
            EmpathDiffuser,
            resize_patch_positions,
            unidiffuser_classes,
        )

        self.recipe, self.run = recipe, run
        m, d = recipe.model, recipe.data
        _, samples = read_prepared(d.prepared)
        self.train_samples = [s for s in samples if s["split"] == d.train_split][: d.max_samples]
        self.val_samples = [s for s in samples if d.val_split and s["split"] == d.val_split]
        if not self.train_samples:
            raise EmoError(f"{d.prepared} has no {d.train_split!r} pairs (recipe key data.train_split)")
        self.parts = load_parts(m.pretrained)
        self.latent_size = self.parts.latent_size(d.resolution)
        UniDiffuserModel, _ = unidiffuser_classes()
        from emocli.hub import load_pretrained

        if m.pretrained_unet:
            unet = load_pretrained(UniDiffuserModel.from_pretrained, m.pretrained, "model.pretrained",
                                   what="UniDiffuser U-ViT", subfolder="unet")
        else:
            config = load_pretrained(UniDiffuserModel.load_config, m.pretrained, "model.pretrained",
                                     what="UniDiffuser U-ViT config", subfolder="unet")
            unet = UniDiffuserModel.from_config(config)
        if unet.config.text_dim != self.parts.text_decoder.prefix_hidden_dim:
            raise EmoError(f"{m.pretrained}: the U-ViT takes {unet.config.text_dim}-d text latents, the caption "
                           f"decoder's encode_prefix gives {self.parts.text_decoder.prefix_hidden_dim}-d")
        resize_patch_positions(unet, self.latent_size)
        decoder = None
        if m.finetune_text_decoder:
            decoder = copy.deepcopy(self.parts.text_decoder).requires_grad_(True)
            decoder.encode_prefix.requires_grad_(False)
        self.model = EmpathDiffuser(unet, len(AVAMERG_COARSE), decoder, m.gradient_checkpointing).train()
        self.alphas = alphas_cumprod(self.parts.scheduler_config)
        self.train_dataset = _Pairs(self.train_samples)
        self.collate_fn = list

    def setup(self, accelerator):
        from emocli.methods.empathdiffuser.features import FeatureTable
        from emocli.training import weight_dtype

        self.device, self.dtype = accelerator.device, weight_dtype(accelerator)
        self.parts.to(accelerator.device)
        self.alphas = self.alphas.to(accelerator.device)
        d = self.recipe.data
        cache = Path(d.feature_cache) if d.feature_cache else self.run.dir / "cache"
        everything = self.train_samples + self.val_samples
        if accelerator.is_main_process:  # the main process encodes and writes the cache; the others read it
            self.features = FeatureTable.build(self.parts, everything, d.resolution, cache, accelerator.device,
                                               d.encoder_batch_size, enabled=True)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            self.features = FeatureTable.build(self.parts, everything, d.resolution, cache, accelerator.device,
                                               d.encoder_batch_size, enabled=False)
        self.scale = float(self.parts.vae.config.scaling_factor)

    # -- batches --
    def _gather(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        from emocli.methods.empathdiffuser.features import sample_latents

        f = self.features
        out = {}
        for role, face_key, text_key in (("c", "speaker_image", "speaker_utterance"), ("r", "listener_image", "response")):
            faces = [f.face(s[face_key]) for s in samples]
            mean = torch.stack([x["latent_mean"] for x in faces]).to(self.device)
            std = torch.stack([x["latent_std"] for x in faces]).to(self.device)
            out[f"{role}_img"] = sample_latents(mean, std, self.scale)
            out[f"{role}_img_mean"] = mean * self.scale
            out[f"{role}_clip"] = torch.stack([x["clip"] for x in faces]).to(self.device)
            out[f"{role}_text"] = torch.stack([f.text(s[text_key]) for s in samples]).to(self.device)
        out["label"] = torch.tensor([s["label"] for s in samples], device=self.device)
        return out

    def loss(self, model, batch):
        m = self.recipe.model
        x = self._gather([self.train_samples[i] for i in batch])
        b = x["label"].shape[0]
        t_img = torch.randint(1, 1001, (b,), device=self.device)
        t_text = torch.randint(1, 1001, (b,), device=self.device)
        a_img, a_text = self.alphas[t_img - 1], self.alphas[t_text - 1]
        eps = [torch.randn_like(x[k]) for k in ("r_img", "r_clip", "r_text")]

        def noised(clean, noise, a):
            a = a.view(-1, *([1] * (clean.dim() - 1)))
            return a.sqrt() * clean + (1 - a).sqrt() * noise

        noisy = [noised(x["r_img"], eps[0], a_img), noised(x["r_clip"], eps[1], a_img),
                 noised(x["r_text"], eps[2], a_text)]
        pure = [torch.randn_like(x[k]) for k in ("r_img", "r_clip", "r_text")]  # the emotion pass
        full = torch.full((b,), 1000, device=self.device)
        drop = torch.rand(b, device=self.device) < m.condition_dropout
        no_drop = torch.zeros(b, dtype=torch.bool, device=self.device)
        out = model(*[torch.cat([n, p]) for n, p in zip(noisy, pure)], torch.cat([t_img, full]),
                    torch.cat([t_text, full]), *[torch.cat([x[k], x[k]]) for k in ("c_img", "c_clip", "c_text")],
                    drop_condition=torch.cat([drop, no_drop]), data_type=m.data_type)
        pred = torch.cat([o[:b].flatten(1) for o in out[:3]], dim=1).float()
        target = torch.cat([e.flatten(1) for e in eps], dim=1).float()
        l_diff = F.mse_loss(pred, target)
        logits = out[3][b:].float()
        l_emo = F.cross_entropy(logits, x["label"])
        loss = l_diff + self.recipe.loss.emotion_weight * l_emo
        logs = {"loss_diffusion": l_diff.item(), "loss_emotion": l_emo.item(),
                "emotion_accuracy": (logits.argmax(-1) == x["label"]).float().mean().item()}
        decoder = getattr(model, "module", model).text_decoder
        if decoder is not None:
            l_dec = self._decoder_loss(decoder, x["r_text"], [self.train_samples[i]["response"] for i in batch])
            loss = loss + self.recipe.loss.text_decoder_weight * l_dec
            logs["loss_text_decoder"] = l_dec.item()
        return loss, logs

    def _decoder_loss(self, decoder, latents, texts: list[str]) -> torch.Tensor:
        tok = self.parts.text_tokenizer
        limit = self.recipe.sample.max_reply_tokens
        rows = [tok(t).input_ids[: limit - 1] + [tok.eos_token_id] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows], device=self.device)
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows], device=self.device)
        prefix = decoder.decode_prefix(latents.to(decoder.decode_prefix.weight.dtype))
        embeds = torch.cat([prefix, decoder.transformer.transformer.wte(ids)], dim=1)
        ignore = torch.full((ids.shape[0], prefix.shape[1]), -100, device=self.device)
        return decoder.transformer(inputs_embeds=embeds, labels=torch.cat([ignore, labels], dim=1)).loss

    # -- validation --
    def evaluate(self, model, accelerator, step):
        if not accelerator.is_main_process or not self.val_samples:
            return None
        from emocli.metrics.classification import accuracy, macro_f1

        v = self.recipe.validation
        net = accelerator.unwrap_model(model)
        samples = self.val_samples[: v.max_samples]
        preds, labels = [], []
        gen = torch.Generator().manual_seed(v.seed)
        for start in range(0, len(samples), 64):
            x = self._gather(samples[start:start + 64])
            noise = [torch.randn(x[k].shape, generator=gen).to(self.device, x[k].dtype) for k in ("r_img", "r_clip", "r_text")]
            logits = net(*noise, 1000, 1000, x["c_img"], x["c_clip"], x["c_text"], data_type=self.recipe.model.data_type)[3]
            preds += logits.argmax(-1).tolist()
            labels += x["label"].tolist()
        result = {"val_emotion_accuracy": accuracy(labels, preds), "val_emotion_macro_f1": macro_f1(labels, preds)}
        if v.face_samples:
            result.update(self.face_distances(net, samples[: v.face_samples], v.face_steps, v.seed))
        return result

    @torch.no_grad()
    def face_distances(self, net, samples: list[dict], steps: int, seed: int) -> dict:
        """RMS distance of generated listener latents to their own target latents (matched) and to the
        target of the nearest following pair with another speaker emotion (mismatched)."""
        from emocli.methods.empathdiffuser.sample import EmpathSampler

        if len({s["label"] for s in samples}) < 2:
            return {}
        sampler = EmpathSampler(net, self.parts, self.recipe.data.resolution, self.recipe.model.data_type, self.device)
        x = self._gather(samples)
        img, _, _ = sampler.respond({"img": x["c_img"], "clip": x["c_clip"], "text": x["c_text"]}, seed, steps,
                                    self.recipe.sample.guidance)
        others = []
        for i, s in enumerate(samples):
            j = next(k % len(samples) for k in range(i + 1, i + len(samples)) if samples[k % len(samples)]["label"] != s["label"])
            others.append(j)
        target = x["r_img_mean"]
        matched = (img.float() - target).pow(2).flatten(1).mean(1).sqrt()
        mismatched = (img.float() - target[others]).pow(2).flatten(1).mean(1).sqrt()
        return {"val_face_distance_matched": matched.mean().item(),
                "val_face_distance_mismatched": mismatched.mean().item(),
                "val_face_closer_to_matched": (matched < mismatched).float().mean().item()}

    def save_pretrained(self, model, directory, state_dict=None):
        model.save_pretrained(directory, state_dict=state_dict)

    def finish(self, model, accelerator, run: Run):
        if not accelerator.is_main_process:
            return
        from emocli.methods.empathdiffuser.sample import RUN_CONFIG

        r = self.recipe
        write_json_atomic(run.final / RUN_CONFIG, {
            "method": "empathdiffuser", "resolution": r.data.resolution,
            # a local folder is stored absolute, so `emo empathize` works from any directory
            "pretrained": str(Path(r.model.pretrained).expanduser().resolve())
            if Path(r.model.pretrained).expanduser().is_dir() else r.model.pretrained,
            "data_type": r.model.data_type, "emotions": list(AVAMERG_COARSE.labels),
            "prepared": str(Path(r.data.prepared).expanduser().resolve()),
            "text_decoder_finetuned": r.model.finetune_text_decoder, "sample": r.sample.model_dump(),
        })
        log.info('EmpathDiffuser run ready: emo empathize --run %s --utterance "..." --face FACE.png', run.dir)


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = EmpathDiffuserTask(run.recipe, run)
    fit(task, run, accelerator, resume=resume)
