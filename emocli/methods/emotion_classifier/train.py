"""`emo train emotion-classifier`: the Emo-A head (``Linear(D -> 8)``) on cached CLIP image features.

EmoGen's emotion classifier is raw CLIP ViT-L/14 ``get_image_features`` + one linear layer, trained on EmoSet
only (reference/emogen.md section 6). Here every image of the chosen splits goes through CLIP once, in
batches, and its feature is cached in ``RUN/cache`` (safetensors, keyed by path + mtime; the same cache format
and identity as `emo eval generation`, so a shared ``data.feature_cache`` serves both). The head then trains
through the shared loop (`emocli.training.fit`) on the cached features: seconds per epoch even for 118K images.

Outputs in the run directory:
    final/model/emotion_head.safetensors   fc.weight (8, D), fc.bias (8): the released head's key layout
    final/model/emotion_head.json          dim, labels, the CLIP model the features came from
    final/metrics.json                     accuracy, polarity accuracy, macro-F1, per emotion, confusion, per split
                                           (+ the reference head's numbers on the same features, when given)
    final/confusion_matrix.png             validation confusion matrix (train when there is no validation split)
    final/cross_fit/                       with data.cross_fit_folds = k: k fold heads and folds.json, for
                                           out-of-sample emotion scores (crossfit.py)
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from emocli.data.emoset import cap_per_emotion
from emocli.emotions import EMOSET
from emocli.errors import EmoError
from emocli.runs import Run, write_json_atomic
from emocli.training import TrainTask, fit, make_accelerator

log = logging.getLogger("emocli")


class _LazyClip:
    """Raw CLIP image features; the model loads only when some image is not cached yet."""

    def __init__(self, source: str, device: torch.device, batch_size: int):
        from emocli.evaluation.backbones import clip_identity

        self.source, self.device, self.batch_size = source, device, batch_size
        self.identity = clip_identity(source)
        self._extractor = None

    def __call__(self, images):
        if self._extractor is None:
            from emocli.evaluation.backbones import ClipImageExtractor, load_clip

            model, processor = load_clip(self.source, "model.clip", self.device)
            self._extractor = ClipImageExtractor(model, processor, self.source, self.batch_size)
        return self._extractor(images)


class _Features(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return {"features": self.x[i], "label": self.y[i], "index": i}


class EmotionClassifierTask(TrainTask):
    def __init__(self, run: Run, accelerator):
        from emocli.evaluation.backbones import resolve_device
        from emocli.evaluation.reference import read_records
        from emocli.metrics.emotion import EmotionHead

        self.recipe = recipe = run.recipe
        data = recipe.data
        records = read_records(data.prepared)
        wanted = [data.train_split] + ([data.val_split] if data.val_split and data.val_split != data.train_split else [])
        self.splits: dict[str, list[dict]] = {}
        for split in wanted:
            chosen = cap_per_emotion([r for r in records if r.get("split") == split], data.max_images_per_split)
            if chosen:
                self.splits[split] = chosen
            elif split == data.train_split:
                raise EmoError(f"{data.prepared} has no {split!r} images (recipe key data.train_split)")
            else:
                log.warning("%s has no %r images: training without validation (data.val_split)", data.prepared, split)
        self.val_split = data.val_split if data.val_split in self.splits and data.val_split != data.train_split else None

        device = accelerator.device if data.device == "auto" else resolve_device(data.device)
        extractor = _LazyClip(recipe.model.clip, device, data.feature_batch_size)
        cache_dir = data.feature_cache or (run.dir / "cache")
        self.features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.paths: dict[str, list[str]] = {}
        self.cache_counts: dict[str, dict] = {}
        self.unreadable: dict[str, str] = {}
        # the main process extracts (and writes the cache); the others read it afterwards
        if accelerator.is_main_process:
            self._extract(cache_dir, extractor)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            self._extract(cache_dir, extractor)
        x, y = self.features[data.train_split]
        if x.shape[0] == 0:
            raise EmoError(f"no readable {data.train_split!r} images in {data.prepared}")
        self.dim = int(x.shape[1])
        self.model = EmotionHead(dim=self.dim, num_classes=len(EMOSET))
        if recipe.model.init_head:
            self.model.load_state_dict(self._head(recipe.model.init_head, "model.init_head").state_dict())
            log.info("head initialised from %s", recipe.model.init_head)
        self.train_dataset = _Features(x, y)

    def _extract(self, cache_dir, extractor) -> None:
        from emocli.evaluation.cache import FeatureCache, extract_features

        batch_size = self.recipe.data.feature_batch_size
        for split, recs in self.splits.items():
            cache = FeatureCache(cache_dir, "clip", extractor.identity)
            out = extract_features([r["image"] for r in recs], {"clip": cache}, {"clip": extractor}, batch_size,
                                   skip_unreadable=True, description=f"CLIP features, {split}")
            labels = torch.tensor([int(EMOSET.index(recs[i]["emotion"])) for i in out.kept], dtype=torch.long)
            self.features[split] = (out.features["clip"], labels)
            self.paths[split] = [recs[i]["image"] for i in out.kept]
            self.cache_counts[split] = out.counts["clip"]
            self.unreadable.update(out.unreadable)

    def _head(self, path, key):
        from emocli.methods.emotion_classifier.head import load_emotion_head

        head, info = load_emotion_head(path, key)
        if info["dim"] != self.dim:
            raise EmoError(f"{key}: the head {info['source']!r} reads {info['dim']}-d features, but {self.recipe.model.clip!r} "
                           f"gives {self.dim}-d ones (recipe key model.clip); EmoGen's head needs "
                           "openai/clip-vit-large-patch14")
        return head

    def loss(self, model, batch):
        logits = model(batch["features"])
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).float().mean().item()}

    @torch.no_grad()
    def _logits(self, model, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.features[split]
        return model(x.to(device)).float().cpu(), y

    def evaluate(self, model, accelerator, step):
        split = self.val_split or self.recipe.data.train_split
        logits, y = self._logits(accelerator.unwrap_model(model), split, accelerator.device)
        if len(y) == 0:
            return None
        return {f"{split}_accuracy": (logits.argmax(-1) == y).float().mean().item(),
                f"{split}_loss": F.cross_entropy(logits, y).item()}

    def save_pretrained(self, model, directory, state_dict=None):
        from emocli.methods.emotion_classifier.head import save_emotion_head

        save_emotion_head(directory, state_dict if state_dict is not None else model.state_dict(),
                          self.recipe.model.clip)

    def finish(self, model, accelerator, run: Run):
        if not accelerator.is_main_process:
            return
        from emocli.metrics.classification import macro_f1
        from emocli.metrics.emotion import emotion_accuracy
        from emocli.metrics.plots import plot_confusion

        model.eval()
        device = next(model.parameters()).device
        reference = self._head(self.recipe.model.reference_head, "model.reference_head").to(device) \
            if self.recipe.model.reference_head else None
        metrics: dict = {"clip": self.recipe.model.clip, "dim": self.dim, "feature_cache": self.cache_counts,
                         "unreadable_images": len(self.unreadable)}
        for split in self.splits:
            logits, y = self._logits(model, split, device)
            if len(y) == 0:
                continue
            report = emotion_accuracy(logits, y.tolist())
            report["macro_f1"] = macro_f1(y.tolist(), logits.argmax(-1).tolist(), labels=range(len(EMOSET)))
            report["loss"] = F.cross_entropy(logits, y).item()
            metrics[split] = report
            if reference is not None:
                ref_logits, _ = self._logits(reference, split, device)
                ref = emotion_accuracy(ref_logits, y.tolist())
                metrics.setdefault("reference_head", {"source": str(self.recipe.model.reference_head)})[split] = {
                    k: ref[k] for k in ("accuracy", "polarity_accuracy", "mean_true_prob", "per_emotion", "confusion")}
        shown = self.val_split or self.recipe.data.train_split
        plot_confusion(metrics[shown]["confusion"], list(EMOSET.labels), list(EMOSET.labels),
                       run.final / "confusion_matrix.png",
                       title=f"Emo-A head, {shown} split (accuracy {100 * metrics[shown]['accuracy']:.1f}%)")
        if self.recipe.data.cross_fit_folds:
            from emocli.methods.emotion_classifier.crossfit import CROSS_FIT_DIR, train_fold_heads

            x, y = self.features[self.recipe.data.train_split]
            metrics["cross_fit"] = {"folds": self.recipe.data.cross_fit_folds, "held_out_accuracy": train_fold_heads(
                x, y, self.paths[self.recipe.data.train_split], self.recipe, run.final / CROSS_FIT_DIR)}
        write_json_atomic(run.final / "metrics.json", metrics)
        log.info("accuracy: %s", ", ".join(f"{s} {100 * metrics[s]['accuracy']:.2f}%" for s in self.splits
                                            if s in metrics))
        if "reference_head" in metrics:
            log.info("reference head accuracy: %s", ", ".join(
                f"{s} {100 * v['accuracy']:.2f}%" for s, v in metrics["reference_head"].items() if s != "source"))


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = EmotionClassifierTask(run, accelerator)
    fit(task, run, accelerator, resume=resume)
