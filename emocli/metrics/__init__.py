"""Evaluation metrics for emotional image generation (and classification), one module per family.

- `emocli.metrics.fid`: `FeatureStats` (float64 mean/covariance, poolable, .npz), `frechet_distance`,
  `aggregated_fid`, the FID Inception-v3 (`FIDInceptionV3`, `InceptionFeatures.from_file`) in plain torch.
- `emocli.metrics.lpips`: LPIPS v0.1 (AlexNet) in plain torch, `lpips_diversity` (within-emotion pairs).
- `emocli.metrics.clip_scores`: CLIP features, CLIP-I (named pairings), CLIP-T (raw cosine, CLIPScore, x100).
- `emocli.metrics.emotion`: Emo-A with EmoGen's released CLIP emotion classifier (`EmotionHead`).
- `emocli.metrics.semantic`: Sem-C (scene/object classifier confidence), Sem-D (CLIP embedding MSE/cosine).
- `emocli.metrics.classification`: accuracy, macro-F1, confusion matrix (numpy).
- `emocli.metrics.text`: COCO caption scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr via pycocoevalcap + Java),
  sacreBLEU, the empathetic-dialogue nltk BLEU-1..4 and Dist-n.
- `emocli.metrics.common`: image conversion, weight loading, within-group pair sampling.

Each module's docstring states its exact convention; docs/metrics.md collects them. No weights are ever
downloaded: every pretrained network is read from a local file named by a recipe key. Importing this package
imports nothing heavy.
"""
