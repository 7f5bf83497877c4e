"""EmpathDiffuser generation: a speaker (utterance, face) -> a reply, a listener face and the speaker's emotion.

Sampler: diffusers' DPMSolverMultistepScheduler as DPM-Solver++ (data prediction, order 3, the
scheduler config of the UniDiffuser folder), over the joint response state (VAE latents, CLIP embedding,
text latents) at one shared timestep, like UniDiffuser's joint mode. The network is trained with
t in 1..1000 meaning noise level alphas_cumprod[t - 1] (U-ViT's convention), so the scheduler's
timestep s (0..999, level alphas_cumprod[s]) is given to it as s + 1.

Guidance: diffusers' convention g*eps(speaker) + (1 - g)*eps(null condition); g = UniDiffuser's scale
s + 1 (the original's default s = 7 is g = 8); g <= 1 turns guidance off.

Emotion: one pass with the response tokens pure noise at t = 1000 (what exists before sampling), the
[EMO] token's softmax over the 7 coarse emotions. Reply: the caption decoder on the sampled text
latents, beam search (diffusers' generate_captions: beam 5, up to 67 tokens) or greedy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from emocli.emotions import AVAMERG_COARSE
from emocli.errors import EmoError

RUN_CONFIG = "empathdiffuser_run.json"
NUM_TRAIN_TIMESTEPS = 1000


def make_scheduler(config: dict):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")


class EmpathSampler:
    def __init__(self, model, parts, resolution: int, data_type: int = 1, device="cpu"):
        self.model, self.parts, self.resolution, self.data_type = model.eval(), parts, resolution, data_type
        self.device = torch.device(device)
        self.latent_size = parts.latent_size(resolution)
        self.decoder = model.text_decoder if model.text_decoder is not None else parts.text_decoder
        unet = model.unet
        if unet.config.sample_size != self.latent_size:
            raise EmoError(f"the model was trained for {unet.config.sample_size}x{unet.config.sample_size} latents, "
                           f"but resolution {resolution} gives {self.latent_size}")

    @classmethod
    def from_run(cls, run_dir, weights: str = "final", device="cpu") -> EmpathSampler:
        from emocli.methods.empathdiffuser.features import load_parts
        from emocli.methods.empathdiffuser.model import EmpathDiffuser

        run_dir = Path(run_dir)
        folder = run_dir / weights
        config_path = run_dir / "final" / RUN_CONFIG
        if not run_dir.is_dir():
            raise EmoError(f"--run {run_dir} does not exist")
        if not config_path.is_file():
            method = None
            try:
                method = json.loads((run_dir / "run.json").read_text()).get("method")
            except (OSError, ValueError):
                pass
            what = f"a {method} run" if method else "not a finished run"
            raise EmoError(f"{run_dir} is {what}, not an EmpathDiffuser run (no final/{RUN_CONFIG}); "
                           f"train one with `emo train empathdiffuser`")
        if not (folder / "model").is_dir():
            raise EmoError(f"{run_dir} has no {weights}/model weights (valid: final, best when train.best_metric is set)")
        config = json.loads(config_path.read_text())
        model = EmpathDiffuser.from_pretrained(folder / "model").to(device)
        parts = load_parts(config["pretrained"], "the run's model.pretrained").to(device)
        sampler = cls(model, parts, config["resolution"], config.get("data_type", 1), device)
        sampler.defaults = config.get("sample", {})
        return sampler

    # -- encodings of new inputs (as features.py) --
    def encode(self, utterances: list[str], faces: list[str]) -> dict[str, torch.Tensor]:
        from emocli.methods.empathdiffuser.features import encode_faces, encode_texts, sample_latents

        face = encode_faces(self.parts, faces, self.resolution, self.device)
        text = encode_texts(self.parts, utterances, self.device)
        gen = torch.Generator().manual_seed(0)
        return {"img": sample_latents(face["latent_mean"], face["latent_std"], self.parts.vae.config.scaling_factor, gen),
                "clip": face["clip"], "text": text}

    @torch.no_grad()
    def emotion(self, cond: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
        """[B, 7] probabilities from the [EMO] token with the response tokens pure noise (t = 1000)."""
        noise = self._noise(cond["img"].shape[0], seed)
        out = self.model(*noise, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS, *self._cond(cond),
                         data_type=self.data_type)
        return out[3].float().softmax(-1).cpu()

    def _cond(self, cond):
        return [cond[k].to(self.device, self._dtype) for k in ("img", "clip", "text")]

    @property
    def _dtype(self):
        return next(self.model.parameters()).dtype

    def _noise(self, batch: int, seed: int):
        u = self.model.unet
        gen = torch.Generator().manual_seed(seed)
        shapes = [(batch, u.out_channels, self.latent_size, self.latent_size), (batch, 1, u.config.clip_img_dim),
                  (batch, u.num_text_tokens, u.config.text_dim)]
        return [torch.randn(s, generator=gen).to(self.device, self._dtype) for s in shapes]

    @torch.no_grad()
    def respond(self, cond: dict[str, torch.Tensor], seed: int = 0, steps: int = 50, guidance: float = 8.0):
        """Sample the response latents: (VAE latents scaled, CLIP embedding, text latents)."""
        batch = cond["img"].shape[0]
        img, clip, text = self._noise(batch, seed)
        shapes = [img.shape[1:], clip.shape[1:], text.shape[1:]]
        sizes = [s.numel() for s in shapes]
        scheduler = make_scheduler(self.parts.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        state = torch.cat([img.flatten(1), clip.flatten(1), text.flatten(1)], dim=1)
        c = self._cond(cond)
        guided = guidance > 1.0
        drop = torch.tensor([False] * batch + [True] * batch, device=self.device) if guided else None
        for t in scheduler.timesteps:
            parts = [p.reshape(batch, *s) for p, s in zip(state.split(sizes, dim=1), shapes)]
            t_net = (t.float() + 1).to(self.device)
            if guided:
                out = self.model(*[torch.cat([p, p]) for p in parts], t_net, t_net, *[torch.cat([x, x]) for x in c],
                                 drop_condition=drop, data_type=self.data_type)
                eps = torch.cat([o.flatten(1) for o in out[:3]], dim=1)
                eps = guidance * eps[:batch] + (1 - guidance) * eps[batch:]
            else:
                out = self.model(*parts, t_net, t_net, *c, data_type=self.data_type)
                eps = torch.cat([o.flatten(1) for o in out[:3]], dim=1)
            state = scheduler.step(eps.to(state.dtype), t, state).prev_sample
        img, clip, text = [p.reshape(batch, *s) for p, s in zip(state.split(sizes, dim=1), shapes)]
        return img, clip, text

    @torch.no_grad()
    def decode_faces(self, latents: torch.Tensor):
        from PIL import Image

        vae = self.parts.vae
        pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        arrays = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arrays]

    @torch.no_grad()
    def decode_texts(self, latents: torch.Tensor, decoding: str = "beam", max_tokens: int = 67) -> list[str]:
        tok, decoder = self.parts.text_tokenizer, self.decoder
        latents = latents.to(self.device, decoder.decode_prefix.weight.dtype)
        if decoding == "beam":
            tokens, lengths = decoder.generate_captions(latents, tok.eos_token_id, self.device)
            return [tok.decode(t[: int(n)], skip_special_tokens=True).strip() for t, n in zip(tokens.cpu(), lengths)]
        if decoding != "greedy":
            raise EmoError(f"unknown reply decoding {decoding!r}; valid: beam, greedy")
        embeds = decoder.decode_prefix(latents)
        wte = decoder.transformer.transformer.wte
        out = torch.zeros(latents.shape[0], 0, dtype=torch.long, device=self.device)
        done = torch.zeros(latents.shape[0], dtype=torch.bool, device=self.device)
        for _ in range(max_tokens):
            logits = decoder.transformer(inputs_embeds=embeds).logits[:, -1]
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tok.eos_token_id), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == tok.eos_token_id
            if bool(done.all()):
                break
            embeds = torch.cat([embeds, wte(nxt)[:, None]], dim=1)
        texts = []
        for row in out.cpu().tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            texts.append(tok.decode(row, skip_special_tokens=True).strip())
        return texts

    def empathize(self, utterances: list[str], faces: list[str], seed: int = 0, steps: int = 50,
                  guidance: float = 8.0, decoding: str = "beam", max_tokens: int = 67) -> list[dict]:
        """One reply, listener face and emotion per (utterance, face)."""
        cond = self.encode(utterances, faces)
        probs = self.emotion(cond, seed)
        img, _, text = self.respond(cond, seed, steps, guidance)
        images = self.decode_faces(img)
        replies = self.decode_texts(text, decoding, max_tokens)
        out = []
        for i in range(len(utterances)):
            p = probs[i].tolist()
            out.append({"reply": replies[i], "face": images[i],
                        "emotion": AVAMERG_COARSE.labels[int(probs[i].argmax())],
                        "probabilities": {e: round(v, 6) for e, v in zip(AVAMERG_COARSE.labels, p)},
                        "latents": img[i].cpu()})
        return out
