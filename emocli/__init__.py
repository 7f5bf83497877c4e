"""emo: one toolkit for emotional image generation and understanding.

Importing this package is cheap on purpose: nothing heavy (torch, diffusers, transformers) is
imported here, so `emo --help` stays instant.
"""

__version__ = "0.1.0"
