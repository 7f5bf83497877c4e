"""EmoGen (CVPR 2024): emotion vectors mapped to a pseudo-word of a frozen Stable Diffusion.

config.py (recipe), mapper.py (the mapping network), injection.py (differentiable placeholder
injection), train.py (stage 2 training), sample.py (generation, fusion, mixing).
See docs/emogen.md for what differs from the original code and why.
"""
