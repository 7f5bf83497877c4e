"""The emotion encoder: image backbone -> fc_1 (the emotion representation) -> ReLU/Dropout -> 8-way head.

Same shape as EmoGen's BackBone (ResNet-50 trunk, Linear 2048->768, ReLU, Dropout 0.5, Linear 768->8);
the 768-d output of fc_1 is the emotion representation the emotion space is built on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from emocli.errors import EmoError
from emocli.hub import load_pretrained

CONFIG_NAME = "emotion_encoder.json"
WEIGHTS_NAME = "model.safetensors"


def build_backbone(name: str, pretrained: str | None, config: dict | None, recipe_key: str):
    """(backbone module, feature dim, backbone config dict)."""
    if name == "resnet":
        from transformers import ResNetConfig, ResNetModel

        model_cls, config_cls = ResNetModel, ResNetConfig
    elif name == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        model_cls, config_cls = CLIPVisionModel, CLIPVisionConfig
    else:
        raise EmoError(f"unknown backbone {name!r}; valid: resnet, clip")
    if pretrained:
        backbone = load_pretrained(model_cls.from_pretrained, pretrained, recipe_key, what=f"{name} backbone")
    elif config is not None:
        backbone = model_cls(config_cls(**config))
    else:
        raise EmoError(f"the backbone needs {recipe_key} (a Hub id or folder) or model.backbone.config")
    cfg = backbone.config
    feature_dim = cfg.hidden_sizes[-1] if name == "resnet" else cfg.hidden_size
    return backbone, feature_dim, cfg.to_dict()


class EmotionEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, backbone_name: str, backbone_config: dict, feature_dim: int,
                 emotion_dim: int = 768, num_emotions: int = 8, dropout: float = 0.5, preprocess: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.fc_1 = nn.Linear(feature_dim, emotion_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(emotion_dim, num_emotions))
        self.meta = {
            "backbone": backbone_name, "backbone_config": backbone_config, "feature_dim": feature_dim,
            "emotion_dim": emotion_dim, "num_emotions": num_emotions, "dropout": dropout,
            "preprocess": preprocess or {},
        }

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=pixel_values)
        return out.pooler_output.flatten(1)

    def represent(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The emotion representation (fc_1 output, before ReLU/Dropout)."""
        return self.fc_1(self.features(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.represent(pixel_values))

    def fingerprint(self) -> str:
        """sha256 over the weights (names, shapes, fp32 values): which encoder made an emotion space."""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            value = tensor.detach().cpu()
            value = value.float() if value.is_floating_point() else value
            digest.update(f"{name}{tuple(value.shape)}".encode())
            digest.update(value.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EmotionEncoder:
        from safetensors.torch import load_file

        directory = Path(directory)
        if (directory / "final" / "model" / CONFIG_NAME).is_file():  # a run directory
            directory = directory / "final" / "model"
        if not (directory / CONFIG_NAME).is_file():
            raise EmoError(f"{directory} holds no trained emotion encoder ({CONFIG_NAME} missing)")
        meta = json.loads((directory / CONFIG_NAME).read_text())
        backbone, feature_dim, _ = build_backbone(meta["backbone"], None, meta["backbone_config"], "")
        model = cls(backbone, meta["backbone"], meta["backbone_config"], feature_dim, meta["emotion_dim"],
                    meta["num_emotions"], meta["dropout"], meta.get("preprocess"))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.eval()
