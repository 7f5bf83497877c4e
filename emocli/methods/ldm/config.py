"""Recipe schema of `emo train ldm` (torch-free).

Defaults follow seed 004: a UNet2DConditionModel trained from scratch on 32x32 latents of a frozen
SD VAE, conditioned by a frozen CLIP ViT-B/32 text encoder (cross-attention 512), DDPM training
scheduler, epsilon prediction, caption dropout 0.1 to the encoded empty string, AdamW 1e-4,
accumulation 2, LPIPS (0.1 from epoch 130) and a latent KL term (0.01 from epoch 260).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from emocli.recipes.schema import OptimSection, Section, TrainRecipe

Scheduler = Literal["dpm++", "unipc", "ddim", "ddpm", "pndm"]


class UNetSection(Section):
    """UNet2DConditionModel constructor arguments (used when model.unet is null)."""

    sample_size: int = Field(32, ge=4)  # latent side: 32 -> 256 px images with the SD VAE
    block_out_channels: tuple[int, ...] = (256, 512, 768)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3
    up_block_types: tuple[str, ...] = ("UpBlock2D",) * 3
    layers_per_block: int = Field(2, ge=1)
    attention_head_dim: int = Field(8, ge=1)
    norm_num_groups: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _same_depth(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"model.unet_config: down_block_types and up_block_types need {n} entries "
                             f"(one per block_out_channels)")
        return self


class LdmModelSection(Section):
    # A CLIP folder or Hub id holding a CLIPTextModel and its tokenizer (frozen).
    text_encoder: str = "openai/clip-vit-base-patch32"
    # An AutoencoderKL: a folder / Hub id, with `vae_subfolder` inside it (frozen).
    vae: str = "CompVis/stable-diffusion-v1-4"
    vae_subfolder: Optional[str] = "vae"
    # A pretrained UNet2DConditionModel folder to start from; null: a new one from unet_config.
    unet: Optional[str] = None
    unet_config: UNetSection = Field(default_factory=UNetSection)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # DDPM training scheduler (SD's betas).
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    gradient_checkpointing: bool = False


class LdmDataSection(Section):
    prepared: str = Field(..., description="a folder written by `emo data prepare captions`")
    resolution: int = Field(256, ge=8)
    center_crop: bool = True  # resize the short side, then centre-crop; false squashes to a square
    flip: bool = False
    # Probability that a training caption becomes "" (encoded and padded exactly as at sampling).
    caption_dropout: float = Field(0.1, ge=0, le=1)
    # VAE latent distributions (mean/logvar: a fresh latent is drawn every step; both flips when
    # data.flip) and text embeddings of every caption, computed once and reused by later runs.
    cache_latents: bool = False
    cache_text: bool = False
    cache_dir: Optional[str] = Field(None, description="null: <prepared>/cache")
    max_samples: Optional[int] = Field(None, ge=1)
    encoder_batch_size: int = Field(32, ge=1)


class LdmLossSection(Section):
    # Min-SNR-gamma weighting (Hang et al. 2023); null: plain MSE.
    snr_gamma: Optional[float] = Field(None, gt=0)
    noise_offset: float = Field(0.0, ge=0)
    # LPIPS between the VAE-decoded x0-prediction and the decoded clean latent, from this epoch on.
    lpips_weight: float = Field(0.0, ge=0)
    lpips_from_epoch: int = Field(0, ge=0)
    # LPIPS weights: torchvision alexnet-owt-7be5be79.pth and the lpips wheel's weights/v0.1/alex.pth.
    lpips_backbone: Optional[str] = None
    lpips_heads: Optional[str] = None
    # KL between per-channel Gaussians fitted to the predicted and the true clean latents (docs/ldm.md).
    kl_weight: float = Field(0.0, ge=0)
    kl_from_epoch: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _lpips_needs_weights(self):
        if self.lpips_weight > 0 and not (self.lpips_backbone and self.lpips_heads):
            raise ValueError("loss.lpips_weight > 0 needs loss.lpips_backbone (alexnet-owt-7be5be79.pth) and "
                             "loss.lpips_heads (lpips weights/v0.1/alex.pth)")
        return self


class LdmSampleSection(Section):
    steps: int = Field(130, ge=1)
    guidance: float = Field(8.0, ge=0)
    scheduler: Scheduler = "dpm++"
    batch_size: int = Field(32, ge=1)


class LdmValidationSection(Section):
    prompts: list[str] = Field(default_factory=lambda: [
        "A red tree monster with a skull face and twisted branches.",
        "Gray vulture monster with wings, sharp beak, and trident.",
    ])
    images_per_prompt: int = Field(2, ge=1)
    steps: int = Field(30, ge=1)
    seed: int = 0


class LdmRecipe(TrainRecipe):
    method: Literal["ldm"] = "ldm"
    model: LdmModelSection = Field(default_factory=LdmModelSection)
    data: LdmDataSection
    loss: LdmLossSection = Field(default_factory=LdmLossSection)
    sample: LdmSampleSection = Field(default_factory=LdmSampleSection)
    validation: LdmValidationSection = Field(default_factory=LdmValidationSection)
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=1e-4, weight_decay=1e-2))
