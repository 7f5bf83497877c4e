"""`emo train emotion-encoder`: supervised 8-way emotion classification on EmoSet, then the emotion space.

Reads a prepared EmoSet (`data.prepared`, written by `emo data prepare emoset` from a release folder,
parquet/JSONL files or a Hub dataset): its train split trains, its val split (if any) validates.

Outputs in the run directory:
    final/model/            the encoder (emotion_encoder.json + model.safetensors; EmotionEncoder.from_pretrained)
    final/emotion_space.safetensors   per-emotion diagonal Gaussian of the fc_1 output (emocli.emotion_space)
    final/metrics.json      accuracy and loss per split
"""

from __future__ import annotations

import json
import logging

import torch
import torch.nn.functional as F

from emocli.data.emoset import SPLITS, EmoSetImages, cap_per_emotion, collate_skip_bad
from emocli.data.prepare import PreparedEmoSet
from emocli.data.transforms import image_transform
from emocli.emotion_space import EmotionSpace
from emocli.errors import EmoError
from emocli.methods.emotion_encoder.model import EmotionEncoder, build_backbone
from emocli.runs import Run, write_json_atomic
from emocli.training import TrainTask, fit, make_accelerator

log = logging.getLogger("emocli")


class EmotionEncoderTask(TrainTask):
    def __init__(self, recipe):
        self.recipe = recipe
        data, model_cfg = recipe.data, recipe.model
        records = PreparedEmoSet(data.prepared).records()
        preprocess = {"resize": data.resize, "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std)}
        backbone, feature_dim, backbone_config = build_backbone(
            model_cfg.backbone.name, model_cfg.backbone.pretrained, model_cfg.backbone.config,
            "model.backbone.pretrained")
        self.model = EmotionEncoder(backbone, model_cfg.backbone.name, backbone_config, feature_dim,
                                    model_cfg.emotion_dim, 8, model_cfg.dropout, preprocess)
        if model_cfg.backbone.freeze:
            self.model.backbone.requires_grad_(False)
        self.eval_transform = image_transform(data.resize, crop=data.image_size, mean=data.mean, std=data.std)
        train_transform = image_transform(data.resize, crop=data.image_size, mean=data.mean, std=data.std,
                                          train=True, flip=data.flip)
        by_split: dict[str, list[dict]] = {}
        for record in records:
            by_split.setdefault(record["split"], []).append(record)
        if not by_split.get("train"):
            raise EmoError(f"{data.prepared} has no train images (recipe key data.prepared)")
        if data.space_split != "all" and not by_split.get(data.space_split):
            raise EmoError(f"{data.prepared} has no {data.space_split!r} images for the emotion space "
                           f"(recipe key data.space_split)")
        self.splits = {s: cap_per_emotion(by_split[s], data.max_images_per_split) for s in SPLITS if by_split.get(s)}
        self.train_dataset = EmoSetImages(self.splits["train"], train_transform)
        self.collate_fn = collate_skip_bad
        self.eval_bad_images: set[str] = set()

    def train_mode(self, model):
        model.train()
        if self.recipe.model.backbone.freeze:  # a frozen backbone keeps its BatchNorm statistics
            self.model.backbone.eval()

    def loss(self, model, batch):
        logits = model(batch["pixel_values"])
        labels = batch["label"]
        loss = F.cross_entropy(logits, labels)
        return loss, {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}

    def _loader(self, accelerator, records):
        dataset = EmoSetImages(records, self.eval_transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.recipe.data.eval_batch_size,
                                             collate_fn=collate_skip_bad)
        return dataset, accelerator.prepare_data_loader(loader)

    @torch.no_grad()
    def _predict(self, model, accelerator, records) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(representations, logits, labels) over `records`, sharded over processes and gathered."""
        dataset, loader = self._loader(accelerator, records)
        reps, logits, labels = [], [], []
        for batch in loader:
            if batch is None:
                continue
            with accelerator.autocast():
                rep = accelerator.unwrap_model(model).represent(batch["pixel_values"])
                out = accelerator.unwrap_model(model).head(rep)
            r, o, y = accelerator.gather_for_metrics((rep.float(), out.float(), batch["label"]))
            reps.append(r.cpu()), logits.append(o.cpu()), labels.append(y.cpu())
        self.eval_bad_images.update(dataset.bad_images)
        if not reps:
            return torch.zeros(0, 1), torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)
        return torch.cat(reps), torch.cat(logits), torch.cat(labels)

    def evaluate(self, model, accelerator, step):
        split = "val" if "val" in self.splits else "train"
        _, logits, labels = self._predict(model, accelerator, self.splits[split])
        if len(labels) == 0:
            return None
        return {f"{split}_accuracy": (logits.argmax(-1) == labels).float().mean().item(),
                f"{split}_loss": F.cross_entropy(logits, labels).item()}

    def save_pretrained(self, model, directory, state_dict=None):
        model.save_pretrained(directory, state_dict=state_dict)

    def finish(self, model, accelerator, run: Run):
        model.eval()
        metrics = {}
        space_split = self.recipe.data.space_split
        space_records = ([r for s in self.splits.values() for r in s] if space_split == "all"
                         else self.splits[space_split])
        for split, records in self.splits.items():
            reps, logits, labels = self._predict(model, accelerator, records)
            if len(labels):
                metrics[split] = {"accuracy": (logits.argmax(-1) == labels).float().mean().item(),
                                  "loss": F.cross_entropy(logits, labels).item(), "images": len(labels)}
            if split == space_split:
                space_reps, space_labels = reps, labels
        if space_split == "all":
            space_reps, _, space_labels = self._predict(model, accelerator, space_records)
        bad = sorted(set(self.train_dataset.bad_images) | self.eval_bad_images)
        metrics["bad_images"] = {"count": len(bad), "paths": bad}
        if bad:
            log.warning("%d unreadable images were skipped (listed in final/metrics.json)", len(bad))
        if accelerator.is_main_process:
            path = EmotionSpace.fit(space_reps, space_labels, encoder=model.fingerprint()).save(run.final)
            write_json_atomic(run.final / "metrics.json", metrics)
            log.info("emotion space (%s split, dim %d): %s", space_split, space_reps.shape[1], path)
            log.info("accuracy per split: %s", json.dumps({k: round(v["accuracy"], 4) for k, v in metrics.items() if k in self.splits}))


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = EmotionEncoderTask(run.recipe)
    fit(task, run, accelerator, resume=resume)
