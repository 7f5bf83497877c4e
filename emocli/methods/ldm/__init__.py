"""Text-conditional latent diffusion from scratch (seed 004): a UNet on a frozen CLIP text encoder and a
frozen SD VAE, trained on captioned images.

config.py (recipe), preflight.py (input checks before a run starts), train.py (the task on the shared
loop; final/model is a StableDiffusionPipeline folder), sample.py (prompt-conditioned generation).
See docs/ldm.md for how to train the seed's model and what differs from the seed.
"""
