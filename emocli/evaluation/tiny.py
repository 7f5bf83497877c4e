"""Random-weight stand-ins for the metric networks, saved as safetensors, so every metric runs on a CPU in seconds
(tests, benchmarks, the tiny recipe). Nothing is downloaded; the numbers they give mean nothing.

`make_tiny_metric_weights(out_dir)` writes:

    inception.safetensors          the full FID Inception-v3 (its width is fixed), He-initialised convolutions so
                                   that its 2048-d features vary between images (PyTorch's default init shrinks
                                   them towards 0 through 90 layers); BatchNorm at identity
    alexnet.safetensors            AlexNet features with narrow widths (8, 16, 16, 12, 12), torchvision key layout
    lpips_heads.safetensors        lin0..lin4 non-negative 1x1 heads for those widths
    scene_resnet50.safetensors     ResNet-50 layout, width 4, one block per stage, 365 classes (Places365's count)
    object_resnet50.safetensors    the same, 1000 classes (ImageNet's count)
    emotion_head.safetensors       Linear(clip_dim -> 8) as fc.weight / fc.bias (clip_dim 32 = the tiny CLIP's)

The tiny recipe (recipes/tiny/eval-generation.yaml) expects them in models/tiny/metrics
(`emo eval tiny-weights --out models/tiny/metrics`), next to `emo models make-tiny --out models/tiny`.
"""

from __future__ import annotations

from pathlib import Path

import torch

ALEX_WIDTHS = (8, 16, 16, 12, 12)


def _save(module_or_state, path: Path) -> Path:
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    save_file({k: v.detach().contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")},
              str(path))
    return path


def make_tiny_metric_weights(out_dir, seed: int = 0, clip_dim: int = 32) -> dict[str, Path]:
    """Write the files listed in the module docstring into `out_dir`; returns {recipe key: path}."""
    from emocli.metrics.emotion import EmotionHead
    from emocli.metrics.fid import FIDInceptionV3
    from emocli.metrics.lpips import AlexNetFeatures
    from emocli.metrics.semantic import ResNet50

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inception = FIDInceptionV3()
        for m in inception.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        paths["inception"] = _save(inception, out / "inception.safetensors")
        alex = AlexNetFeatures(widths=ALEX_WIDTHS)
        paths["lpips_backbone"] = _save(alex, out / "alexnet.safetensors")
        heads = {f"lin{k}.model.1.weight": torch.rand(1, w, 1, 1) / w for k, w in enumerate(ALEX_WIDTHS)}
        paths["lpips_heads"] = _save(heads, out / "lpips_heads.safetensors")
        paths["scene_classifier"] = _save(ResNet50(num_classes=365, width=4, blocks=(1, 1, 1, 1)),
                                          out / "scene_resnet50.safetensors")
        paths["object_classifier"] = _save(ResNet50(num_classes=1000, width=4, blocks=(1, 1, 1, 1)),
                                           out / "object_resnet50.safetensors")
        paths["emotion_head"] = _save(EmotionHead(dim=clip_dim, num_classes=8), out / "emotion_head.safetensors")
    return paths
