"""The EmpathDiffuser network: diffusers' UniDiffuserModel (U-ViT) with a speaker condition and an [EMO] token.

One sequence through the pretrained U-ViT blocks:

    [t_x', t_y', (data type), response text (77), response CLIP (1), response VAE patches (N)]   noisy, as UniDiffuser
    [speaker text (77), speaker CLIP (1), speaker VAE patches (N)]                             clean condition
    [EMO]                                                                                       emotion token

Response tokens use UniDiffuser's own input layers, position table and output heads, so the pretrained
weights keep their meaning. Condition tokens go through the same input layers, then get their own
positions (initialised from the response ones) plus a learned "clean condition" embedding; for
classifier-free guidance a condition can be replaced by learned null tokens. The [EMO] output feeds
LayerNorm -> MLP -> 7 coarse emotions. U-ViT has no cross-attention: conditioning is by attention over
the longer sequence (diffusers' transformer accepts any length).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from emocli.errors import EmoError

log = logging.getLogger("emocli")

CONFIG_NAME = "empathdiffuser.json"
WEIGHTS_NAME = "model.safetensors"


def unidiffuser_classes():
    """(UniDiffuserModel, UniDiffuserTextDecoder) from diffusers, or a clear error when a diffusers
    release no longer ships them (they are deprecated since 0.34 but present in 0.42)."""
    try:
        from diffusers import UniDiffuserModel, UniDiffuserTextDecoder
    except ImportError:
        import diffusers

        raise EmoError(f"EmpathDiffuser needs diffusers' UniDiffuserModel and UniDiffuserTextDecoder, which "
                       f"diffusers {diffusers.__version__} does not have; install a release that ships them "
                       f"(0.42 does): pip install 'diffusers>=0.30,<=0.42.1'") from None
    return UniDiffuserModel, UniDiffuserTextDecoder


def resize_patch_positions(unet, latent_size: int) -> None:
    """Interpolate the VAE-patch part of `unet.pos_embed` bilinearly to `latent_size` latents (as the
    original U-ViT v1 does for 256 px on a 512 px checkpoint) and record the new size in its config."""
    old = int(unet.config.sample_size)
    if latent_size == old:
        return
    patch = int(unet.patch_size)
    if latent_size % patch:
        raise EmoError(f"latent size {latent_size} is not a multiple of the patch size {patch}")
    head = unet.pos_embed[:, : 1 + 1 + unet.num_text_tokens + 1]
    grid = unet.pos_embed[:, head.shape[1]:]
    g_old, g_new = old // patch, latent_size // patch
    dim = grid.shape[-1]
    grid = grid.reshape(1, g_old, g_old, dim).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=(g_new, g_new), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, g_new * g_new, dim).to(head.dtype)
    unet.pos_embed = nn.Parameter(torch.cat([head.detach(), grid.detach()], dim=1))
    unet.num_patches = g_new * g_new
    unet.num_tokens = head.shape[1] + unet.num_patches
    unet.sample_size = latent_size
    unet.register_to_config(sample_size=latent_size)
    log.info("U-ViT patch positions interpolated from %dx%d to %dx%d latents", old, old, latent_size, latent_size)


class EmpathDiffuser(nn.Module):
    def __init__(self, unet, num_classes: int = 7, text_decoder=None, gradient_checkpointing: bool = False):
        super().__init__()
        self.unet = unet
        self.text_decoder = text_decoder  # only when the caption decoder is fine-tuned with the U-ViT
        self.num_classes = num_classes
        self.gradient_checkpointing = gradient_checkpointing
        dim = unet.inner_dim
        cond_length = unet.num_text_tokens + 1 + unet.num_patches
        self.cond_pos_embed = nn.Parameter(unet.pos_embed[:, 2:].detach().clone())
        self.cond_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.null_condition = nn.Parameter(torch.zeros(1, cond_length, dim))
        self.emo_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.emotion_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_classes))

    @property
    def config(self) -> dict:
        return {"num_classes": self.num_classes, "unet": dict(self.unet.config),
                "text_decoder": dict(self.text_decoder.config) if self.text_decoder is not None else None}

    def _time_token(self, proj, embed, t, batch: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=like.device, dtype=torch.float32).reshape(-1).expand(batch)
        return embed(proj(t).to(like.dtype)).unsqueeze(1)

    def forward(self, r_img, r_clip, r_text, t_img, t_text, c_img, c_clip, c_text, drop_condition=None,
                data_type: int = 1):
        """Noise predictions for the response (VAE latents, CLIP embedding, text latents) and emotion logits.

        r_*: noisy response [B,C,h,w], [B,1,dc], [B,77,dt]; t_img / t_text: [B] or scalars in 0..1000
        (0 clean, 1000 pure noise); c_*: the clean speaker condition, same shapes; drop_condition: [B] bool,
        True where the condition is replaced by the null tokens (classifier-free guidance).
        """
        u = self.unet
        batch = r_img.shape[0]
        img = u.vae_img_in(r_img)
        response = [self._time_token(u.timestep_img_proj, u.timestep_img_embed, t_img, batch, img),
                    self._time_token(u.timestep_text_proj, u.timestep_text_embed, t_text, batch, img)]
        pos = u.pos_embed
        if u.use_data_type_embedding:
            kind = torch.full((batch,), int(data_type), dtype=torch.long, device=img.device)
            response.append(u.data_type_token_embedding(kind).unsqueeze(1))
            pos = torch.cat([pos[:, :2], u.data_type_pos_embed_token, pos[:, 2:]], dim=1)
        response += [u.text_in(r_text), u.clip_img_in(r_clip), img]
        response = torch.cat(response, dim=1) + pos
        cond = torch.cat([u.text_in(c_text), u.clip_img_in(c_clip), u.vae_img_in(c_img)], dim=1) + self.cond_embed
        if drop_condition is not None:
            cond = torch.where(drop_condition.view(-1, 1, 1), self.null_condition.to(cond.dtype), cond)
        cond = cond + self.cond_pos_embed
        hidden = torch.cat([response, cond, self.emo_token.expand(batch, -1, -1).to(response.dtype)], dim=1)
        hidden = self._blocks(u.pos_embed_drop(hidden))

        skip = 3 if u.use_data_type_embedding else 2
        n_text, n_img = r_text.shape[1], img.shape[1]
        text_out, clip_out, img_out = hidden[:, skip:skip + n_text + 1 + n_img].split((n_text, 1, n_img), dim=1)
        img_out = u.vae_img_out(img_out)
        side, p, c = int(math.isqrt(n_img)), u.patch_size, u.out_channels
        img_out = img_out.reshape(batch, side, side, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(batch, c, side * p, side * p)
        logits = self.emotion_head(hidden[:, -1])
        return img_out, u.clip_img_out(clip_out), u.text_out(text_out), logits

    def _blocks(self, hidden):
        """diffusers' UTransformer2DModel forward (in-blocks, mid, out-blocks with long skips), with
        optional activation checkpointing per block (the port has none)."""
        tr = self.unet.transformer
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()

        def run(block, x):
            if ckpt:
                return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            return block(x)

        skips = []
        for block in tr.transformer_in_blocks:
            hidden = run(block, hidden)
            skips.append(hidden)
        hidden = run(tr.transformer_mid_block, hidden)
        for block in tr.transformer_out_blocks:
            hidden = block["skip"](hidden, skips.pop())
            hidden = run(block["block"], hidden)
        return tr.norm_out(hidden)

    # -- files --
    def save_pretrained(self, directory, state_dict: dict | None = None, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        # clone: the caption decoder's LM head may share memory with its token embedding (safetensors refuses)
        save_file({k: v.detach().float().cpu().clone().contiguous() for k, v in state.items()},
                  str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps({**self.config, **(extra or {})}, indent=2, default=str))

    @classmethod
    def from_pretrained(cls, directory) -> EmpathDiffuser:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise EmoError(f"{directory} holds no EmpathDiffuser weights ({CONFIG_NAME} missing)")
        config = json.loads((directory / CONFIG_NAME).read_text())
        UniDiffuserModel, UniDiffuserTextDecoder = unidiffuser_classes()
        unet = UniDiffuserModel.from_config({k: v for k, v in config["unet"].items() if not k.startswith("_")})
        decoder = None
        if config.get("text_decoder"):
            decoder = UniDiffuserTextDecoder.from_config(
                {k: v for k, v in config["text_decoder"].items() if not k.startswith("_")})
        state = load_file(str(directory / WEIGHTS_NAME))
        if decoder is not None and "text_decoder.transformer.lm_head.weight" in state:
            # GPT-2 ties its LM head to the token embedding on construction; the saved file holds both
            # (equal for a tied decoder): untie, so loading one does not overwrite the other
            head = decoder.transformer.lm_head
            head.weight = nn.Parameter(head.weight.detach().clone())
        model = cls(unet, num_classes=config["num_classes"], text_decoder=decoder)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EmoError(f"{directory / WEIGHTS_NAME} does not match its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
        return model.eval()
