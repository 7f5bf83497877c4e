"""Checks of `emo train ldm` before its run directory exists (see emocli/preflight.py)."""

from __future__ import annotations

from emocli import preflight as pf
from emocli.errors import EmoError


def preflight(recipe) -> None:
    m, loss = recipe.model, recipe.loss

    def prepared_captions():
        from emocli.data.captions import PreparedCaptions

        try:
            prepared = PreparedCaptions(recipe.data.prepared)
        except EmoError as e:
            raise EmoError(f"data.prepared: {e.message}") from None
        counts = prepared.manifest.get("counts", {}).get("per_split", {})
        if not counts.get("train"):
            raise EmoError(f"data.prepared {prepared.path} has no training images (splits: {counts}); "
                           f"prepare a caption set with images: `emo data prepare captions`")

    def lpips_weights():
        if loss.lpips_weight > 0:
            pf.local_path(loss.lpips_backbone, "loss.lpips_backbone", "AlexNet weights", kind="file")
            pf.local_path(loss.lpips_heads, "loss.lpips_heads", "LPIPS head weights", kind="file")

    pf.check_all(
        *pf.train_checks(recipe),
        lambda: pf.model_source(m.text_encoder, "model.text_encoder", "CLIP text encoder"),
        lambda: pf.model_source(m.vae, "model.vae", "VAE"),
        lambda: pf.model_source(m.unet, "model.unet", "UNet"),
        lpips_weights,
        prepared_captions,
    )
