"""`emo train emoclip`: text-to-image InfoNCE on "caption + emotion", vision tower frozen.

Trainable: the text transformer and text_projection; frozen: the vision tower, visual_projection
and logit scale. Image features are computed once (the vision side never changes) and the loss is
cross-entropy of logit_scale * cos(text, image) over in-batch images, text -> image only (as the
fork). Outputs: final/text_encoder (a CLIPTextModel + tokenizer folder: set an EmoGen recipe's
`model.text_encoder` to it) and final/model (the whole CLIPModel).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from emocli.errors import EmoError
from emocli.hub import load_pretrained
from emocli.runs import Run
from emocli.training import TrainTask, fit, make_accelerator

log = logging.getLogger("emocli")


def load_captions(path: str) -> dict[str, str]:
    file = Path(path)
    if not file.is_file():
        raise EmoError(f"captions file {path!r} does not exist (recipe key data.captions)")
    text = file.read_text()
    if file.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return {str(r["id"]): str(r["caption"]) for r in rows}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise EmoError(f"{path} must hold a JSON object {{image_id: caption}} (or use .jsonl)")
    return {str(k): str(v) for k, v in data.items()}


def annotation_caption(record: dict) -> str:
    """A plain caption from the EmoSet annotations, for data without captions."""
    obj = (record.get("objects") or [None])[0]
    scene = (record.get("scene") or "").replace("_", " ")
    text = "a photo" + (f" of {obj.lower()}" if obj else "") + (f" in a {scene}" if scene else "")
    return text


class TextTower(nn.Module):
    """The trainable half of a CLIPModel (shares its modules)."""

    def __init__(self, clip):
        super().__init__()
        self.text_model, self.text_projection = clip.text_model, clip.text_projection

    def forward(self, input_ids, attention_mask=None):
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.text_projection(pooled)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, input_ids, attention_mask):
        self.input_ids, self.attention_mask = input_ids, attention_mask

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "index": i}


class EmoClipTask(TrainTask):
    def __init__(self, recipe, run: Run):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.recipe, self.run = recipe, run
        m, d = recipe.model, recipe.data
        self.clip = load_pretrained(CLIPModel.from_pretrained, m.pretrained, "model.pretrained", what="CLIP")
        self.tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, m.pretrained, "model.pretrained",
                                         what="CLIP tokenizer")
        self.processor = CLIPImageProcessor.from_pretrained(m.pretrained)
        self.clip.requires_grad_(False)
        self.model = TextTower(self.clip).requires_grad_(True)
        if m.gradient_checkpointing:
            self.clip.text_model.gradient_checkpointing_enable()
        prepared = Path(d.prepared)
        if not (prepared / "records.jsonl").is_file():
            raise EmoError(f"{prepared} is not a prepared EmoSet folder (no records.jsonl)")
        records = [json.loads(x) for x in (prepared / "records.jsonl").read_text().splitlines() if x.strip()]
        captions = load_captions(d.captions) if d.captions else {r["id"]: annotation_caption(r) for r in records}
        records = [r for r in records if r["split"] == d.split and r["id"] in captions]
        if d.max_samples:
            records = records[: d.max_samples]
        if len(records) < 2:
            raise EmoError(f"only {len(records)} {d.split} images have a caption in {d.captions}; need at least 2")
        self.records = records
        texts = [f"{captions[r['id']]}{d.separator}{r['emotion']}" for r in records]
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        self.train_dataset = _Pairs(tokens.input_ids, tokens.attention_mask)
        log.info("EmoCLIP: %d caption+emotion texts, e.g. %r", len(texts), texts[0])

    def setup(self, accelerator):
        from emocli.training import weight_dtype

        self.clip.vision_model.to(accelerator.device, weight_dtype(accelerator))
        self.clip.visual_projection.to(accelerator.device, weight_dtype(accelerator))
        self.clip.logit_scale.data = self.clip.logit_scale.data.to(accelerator.device)
        self.image_features = self._image_features(accelerator)

    @torch.no_grad()
    def _image_features(self, accelerator) -> torch.Tensor:
        from emocli.data.emoset import load_rgb
        from emocli.progress import track

        feats = []
        size = self.recipe.data.feature_batch_size
        chunks = [self.records[i:i + size] for i in range(0, len(self.records), size)]
        for chunk in track(chunks, description="image features", enabled=accelerator.is_main_process):
            pixels = self.processor(images=[load_rgb(r["image"]) for r in chunk], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(accelerator.device, self.clip.visual_projection.weight.dtype)
            out = self.clip.vision_model(pixel_values=pixels).pooler_output
            feats.append(F.normalize(self.clip.visual_projection(out).float(), dim=-1))
        return torch.cat(feats)

    def loss(self, model, batch):
        text = F.normalize(model(batch["input_ids"], batch["attention_mask"]).float(), dim=-1)
        images = self.image_features[batch["index"].to(self.image_features.device)]
        logits = self.clip.logit_scale.exp().float() * text @ images.T
        target = torch.arange(len(text), device=logits.device)
        loss = F.cross_entropy(logits, target)
        return loss, {"text_to_image_acc": (logits.argmax(-1) == target).float().mean().item()}

    @torch.no_grad()
    def evaluate(self, model, accelerator, step):
        """Text->image retrieval accuracy over the whole training pool (rank 0 computes on its device)."""
        if not accelerator.is_main_process:
            return None
        tower = accelerator.unwrap_model(model)
        hits, n = 0, len(self.train_dataset)
        for start in range(0, n, 64):
            idx = torch.arange(start, min(start + 64, n))
            ids = self.train_dataset.input_ids[idx].to(accelerator.device)
            mask = self.train_dataset.attention_mask[idx].to(accelerator.device)
            text = F.normalize(tower(ids, mask).float(), dim=-1)
            hits += int(((text @ self.image_features.T).argmax(-1).cpu() == idx).sum())
        return {"retrieval_top1": hits / n}

    def save_pretrained(self, model, directory, state_dict=None):
        from transformers import CLIPTextModel

        directory = Path(directory)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        # fp32 on export: under mixed precision the frozen vision side lives in fp16/bf16 on the device
        full = {k: v.detach().float().cpu() for k, v in self.clip.state_dict().items()}
        self.clip.save_pretrained(directory, state_dict=full)
        self.tokenizer.save_pretrained(directory)
        text = CLIPTextModel(self.clip.config.text_config)  # what StableDiffusionPipeline loads
        text.load_state_dict({k.removeprefix("text_model."): v for k, v in full.items() if k.startswith("text_model.")})
        text.save_pretrained(directory.parent / "text_encoder")
        self.tokenizer.save_pretrained(directory.parent / "text_encoder")


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = EmoClipTask(run.recipe, run)
    fit(task, run, accelerator, resume=resume)
