"""`emo eval generation`: EmoGen's Table 1 metrics (FID, LPIPS, Emo-A, Sem-C, Sem-D) plus CLIP-I/CLIP-T
over a folder written by `emo sample`, against a prepared EmoSet, with shared cached features."""
