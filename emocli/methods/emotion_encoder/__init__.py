"""EmoGen stage 1: the emotion encoder and the emotion space (reference/emogen.md section 1)."""
