"""The EmoGen emotion space: one diagonal Gaussian per emotion over the emotion representation.

File format (ours): one safetensors file, `emotion_space.safetensors`, with tensors
    mean  float32 [num_emotions, dim]
    std   float32 [num_emotions, dim]
and metadata {"emotions": "amusement,awe,...", "dim": "768", "format": "emo-emotion-space/1",
"encoder": "<sha256 of the emotion encoder's weights>"}, rows in EmoSet index order. `encoder` says
which emotion encoder produced the vectors (EmotionEncoder.fingerprint()); a mapper trained on one
encoder's vectors is meaningless on another's space, so sampling checks it (`check_encoder`). The official EmoGen release (`emo_space/{emotion}_{mean,std}_v2.pt`,
float32 [768] each) loads into the same object (read with emocli.safeload.load_weights_only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.written import publish

FORMAT = "emo-emotion-space/1"
FILENAME = "emotion_space.safetensors"


@dataclass
class EmotionSpace:
    mean: torch.Tensor  # [E, D]
    std: torch.Tensor  # [E, D]
    emotions: tuple[str, ...] = EMOSET.labels
    # EmotionEncoder.fingerprint() of the encoder whose vectors made the space; None: unknown (e.g. the
    # released emo_space/, made by EmoGen's unpublished ResNet).
    encoder: str | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, emotions=EMOSET.labels,
            encoder: str | None = None) -> EmotionSpace:
        """Per-emotion mean and (unbiased) std of `features` [N, D] grouped by `labels` [N]."""
        features, labels = features.double(), labels.long()
        means, stds = [], []
        for i, name in enumerate(emotions):
            rows = features[labels == i]
            if len(rows) < 2:
                raise EmoError(f"the emotion space needs at least 2 images of {name!r}, got {len(rows)}")
            means.append(rows.mean(0))
            stds.append(rows.std(0, unbiased=True))
        return cls(torch.stack(means).float(), torch.stack(stds).float(), tuple(emotions), encoder)

    def index(self, emotion: str) -> int:
        EMOSET.validate(emotion)
        return self.emotions.index(emotion.strip().lower())

    def sample(self, emotion: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        i = self.index(emotion)
        noise = torch.randn((n, self.dim), generator=generator, dtype=torch.float32)
        return self.mean[i] + noise * self.std[i]

    def mixed(self, emotion: str, other: str, mix: float) -> EmotionSpace:
        """A space whose `emotion` row is interpolated towards `other` by `mix` (0 = unchanged)."""
        if not 0.0 <= mix <= 1.0:
            raise EmoError(f"mix must be within 0..1, got {mix}")
        i, j = self.index(emotion), self.index(other)
        mean, std = self.mean.clone(), self.std.clone()
        mean[i] = (1 - mix) * self.mean[i] + mix * self.mean[j]
        std[i] = ((1 - mix) * self.std[i] ** 2 + mix * self.std[j] ** 2).sqrt()
        return EmotionSpace(mean, std, self.emotions, self.encoder)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        metadata = {"emotions": ",".join(self.emotions), "dim": str(self.dim), "format": FORMAT}
        if self.encoder:
            metadata["encoder"] = self.encoder
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous()}, str(tmp), metadata=metadata)
        publish(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, expect_dim: int | None = None) -> EmotionSpace:
        """Load our safetensors file, a folder holding it, or the official `emo_space/` folder."""
        path = Path(path)
        if path.is_dir() and (path / FILENAME).is_file():
            path = path / FILENAME
        if path.is_file() and path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                mean, std = f.get_tensor("mean"), f.get_tensor("std")
            emotions = tuple(meta.get("emotions", ",".join(EMOSET.labels)).split(","))
            space = cls(mean.float(), std.float(), emotions, meta.get("encoder") or None)
        elif path.is_dir() and any(path.glob("*_mean_v2.pt")):
            space = cls._load_official(path)
        else:
            raise EmoError(f"{path} is not an emotion space (expected {FILENAME} or the official "
                           f"emo_space/ folder with <emotion>_mean_v2.pt files)")
        if expect_dim is not None and space.dim != expect_dim:
            raise EmoError(f"emotion space {path} has dimension {space.dim}, but the model expects {expect_dim}")
        return space

    def check_encoder(self, encoder: str | None, allow_foreign: bool, source: str, switch: str) -> bool:
        """True when this space was made by `encoder` (the fingerprint a mapper was trained with). Else
        EmoError naming `switch`, or with `allow_foreign` a warning and False."""
        if encoder and self.encoder == encoder:
            return True
        if not self.encoder:
            why = "records no emotion encoder (e.g. the released emo_space/, made by EmoGen's unpublished ResNet)"
        elif not encoder:
            why = f"was made by encoder {self.encoder[:12]}, but the mapper records no encoder"
        else:
            why = f"was made by encoder {self.encoder[:12]}, the mapper was trained on encoder {encoder[:12]}"
        message = (f"emotion space {source} {why}: its vectors are not the ones the mapper learned from; "
                   f"pass {switch} to use it anyway")
        if not allow_foreign:
            raise EmoError(message)
        import logging

        logging.getLogger("emocli").warning("emotion space %s %s; used anyway (%s): the images may not show "
                                            "the emotion", source, why, switch)
        return False

    @classmethod
    def _load_official(cls, folder: Path) -> EmotionSpace:
        from emocli.safeload import load_weights_only

        means, stds = [], []
        for emotion in EMOSET.labels:
            tensors = []
            for kind in ("mean", "std"):
                file = folder / f"{emotion}_{kind}_v2.pt"
                if not file.is_file():
                    raise EmoError(f"official emotion space {folder} lacks {file.name}")
                value = load_weights_only(file, what="official emotion space file")
                if not isinstance(value, torch.Tensor):
                    raise EmoError(f"{file} does not hold a tensor")
                tensors.append(value.float().reshape(-1))
            means.append(tensors[0])
            stds.append(tensors[1])
        return cls(torch.stack(means), torch.stack(stds), EMOSET.labels)
