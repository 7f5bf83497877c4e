"""Evaluation machinery shared by every `emo eval ...` command (and by trainers that evaluate), torch-free
to import:

- `emocli.evaluation.cache`: `FeatureCache` (per-image features of one backbone, safetensors, keyed by file
  path + mtime + size) and `extract_features` (image paths in, one row per image out, decoding each batch
  once for every backbone that lacks it).
- `emocli.evaluation.backbones`: loading each metric network from one recipe key (CLIP, FID Inception-v3,
  LPIPS AlexNet + heads, ResNet-50s) and the extractors (`ClipImageExtractor`, `InceptionExtractor`,
  `SemCExtractor`) that map a list of PIL images to features.
- `emocli.evaluation.reference`: per-group reference statistics (`FeatureStats`) cached next to the data,
  and the reading of a prepared EmoSet's reference images.
- `emocli.evaluation.report`: one report (report.md + report.html + plots + metrics.json) for every
  evaluation: tables with reference rows, per-row flags and confidence intervals, sections, plots,
  image galleries (embedded or linked).
- `emocli.evaluation.tiny`: random-weight stand-ins for the metric networks (tests, tiny recipes).

Nothing here belongs to one method: `emocli.methods.<name>` evaluations choose what to compute and report.
"""
