"""The EmoGen mapping network: emotion vector (768) -> token embedding of the text encoder.

`mlp`: Linear(in, hidden) [+LayerNorm] [+ReLU] [+Dropout], (num_fc_layers - 2) more hidden blocks,
then Linear(hidden, out) — the paper's MLP (released config: 2 layers, ReLU, no LN, no dropout).
`fc`: one Linear(in, out), the maintainers' suggested baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from emocli.errors import EmoError

CONFIG_NAME = "mapper.json"
WEIGHTS_NAME = "mapper.safetensors"


class Mapper(nn.Module):
    def __init__(self, in_dim: int = 768, out_dim: int = 768, name: str = "mlp", num_fc_layers: int = 2,
                 hidden_dim: int = 1024, relu: bool = True, layer_norm: bool = False, dropout: float = 0.0,
                 encoder: str | None = None):
        super().__init__()
        # encoder: the fingerprint of the emotion encoder whose vectors the mapper learned from; sampling
        # checks that the emotion space came from the same encoder.
        self.config = {"in_dim": in_dim, "out_dim": out_dim, "name": name, "num_fc_layers": num_fc_layers,
                       "hidden_dim": hidden_dim, "relu": relu, "layer_norm": layer_norm, "dropout": dropout,
                       "encoder": encoder}
        if name == "fc":
            self.net = nn.Linear(in_dim, out_dim)
            return
        if name != "mlp":
            raise EmoError(f"unknown mapper {name!r}; valid: mlp, fc")
        if num_fc_layers < 2:
            raise EmoError(f"an mlp mapper needs num_fc_layers >= 2, got {num_fc_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_fc_layers - 1):
            layers.append(nn.Linear(width, hidden_dim))
            if layer_norm:
                layers.append(nn.LayerNorm(hidden_dim))
            if relu:
                layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, emotion_vectors: torch.Tensor) -> torch.Tensor:
        return self.net(emotion_vectors)

    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Mapper:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise EmoError(f"{directory} holds no EmoGen mapper ({CONFIG_NAME} missing)")
        mapper = cls(**json.loads((directory / CONFIG_NAME).read_text()))
        mapper.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return mapper.eval()
