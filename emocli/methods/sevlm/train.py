"""`emo train sevlm`: SEVLM on a prepared ArtEmis (`emo data prepare artemis`), on the shared loop.

With the contrastive head on, an item is one artwork with two annotations of different emotions (the
contrastive subset, as the original), so `train.batch_size` artworks give twice as many sequences; with it
off, an item is one annotation of any training artwork. Validation decodes greedily and reports emotion
accuracy (artworks with a strict-majority emotion) and BLEU-4 of the explanation part (COCO BLEU on a
lower-cased word split, no Java). `train.best_metric: emotion_accuracy` keeps RUN/best/model (and early
stopping watches it); the best BLEU-4 weights go to RUN/best-bleu4/model.

Outputs: RUN/final/model, RUN/best/model, RUN/best-bleu4/model (SevlmPipeline.from_pretrained folders),
RUN/metrics.jsonl (loss_lm, loss_vad, loss_contrastive per logged step; eval results), RUN/final/bad_images.json.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import torch

from emocli.data.artemis import PreparedArtEmis, majority_emotion
from emocli.data.emoset import CorruptImage, load_rgb
from emocli.errors import EmoError
from emocli.methods.sevlm.model import SevlmPipeline, build_pipeline, encode_images, image_to_tensor
from emocli.runs import Run, write_json_atomic
from emocli.training import TrainTask, fit, make_accelerator
from emocli.written import publish

log = logging.getLogger("emocli")


class ArtworkSequences(torch.utils.data.Dataset):
    """Training items: {"pixel_values", "sequences": [token ids, ...]} or None for an unreadable image."""

    def __init__(self, artworks: list[dict], layout, image_size: int, paired: bool):
        self.layout, self.image_size, self.paired = layout, image_size, paired
        if paired:
            self.items = [(a, None) for a in artworks if len(set(a["emotions"])) >= 2]
        else:
            self.items = [(a, k) for a in artworks for k in range(len(a["emotions"]))]
        self.bad_images: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        artwork, k = self.items[index]
        try:
            image = load_rgb(artwork["path"])
        except CorruptImage as e:
            if e.path not in self.bad_images:
                self.bad_images.append(e.path)
                log.warning("skipping bad image %s: %s", e.path, e.reason)
            return None
        emotions, texts = artwork["emotions"], artwork["explanations"]
        if self.paired:  # one annotation, then one of a different emotion (python `random`: seeded per worker)
            first = random.randrange(len(emotions))
            others = [j for j in range(len(emotions)) if emotions[j] != emotions[first]]
            chosen = [first, random.choice(others)]
        else:
            chosen = [k]
        return {"pixel_values": image_to_tensor(image, self.image_size),
                "sequences": [self.layout.encode(emotions[j], texts[j]) for j in chosen]}


class Collate:
    def __init__(self, layout):
        self.layout = layout

    def __call__(self, items):
        items = [item for item in items if item is not None]
        if not items:
            return None
        sequences = [seq for item in items for seq in item["sequences"]]
        batch = self.layout.batch(sequences)
        batch["pixel_values"] = torch.stack([item["pixel_values"] for item in items])
        batch["image_index"] = torch.tensor([i for i, item in enumerate(items) for _ in item["sequences"]])
        return batch


def load_images(artworks: list[dict], image_size: int, bad: list[str]) -> tuple[list[dict], torch.Tensor | None]:
    kept, tensors = [], []
    for artwork in artworks:
        try:
            tensors.append(image_to_tensor(load_rgb(artwork["path"]), image_size))
            kept.append(artwork)
        except CorruptImage as e:
            bad.append(e.path)
    return kept, (torch.stack(tensors) if tensors else None)


def explain_artworks(pipeline: SevlmPipeline, artworks: list[dict], batch_size: int, decode: dict,
                     bad: list[str]) -> list[dict]:
    """Generate for every readable artwork: [{"artwork", "text", "emotion", "explanation"}]."""
    results = []
    for start in range(0, len(artworks), batch_size):
        kept, pixels = load_images(artworks[start:start + batch_size], pipeline.config.image_size, bad)
        if pixels is None:
            continue
        for artwork, text in zip(kept, pipeline.generate(pixels, **decode)):
            emotion, explanation = pipeline.layout.split_text(text)
            results.append({"artwork": artwork, "text": text, "emotion": emotion, "explanation": explanation})
    return results


def emotion_accuracy(results: list[dict]) -> tuple[float, int]:
    """Accuracy over artworks with a strict-majority emotion (the paper's rule), and their number."""
    scored = [(r["emotion"], majority_emotion(r["artwork"]["emotion_histogram"])) for r in results]
    scored = [(pred, true) for pred, true in scored if true is not None]
    return (sum(p == t for p, t in scored) / len(scored) if scored else 0.0), len(scored)


class SevlmTask(TrainTask):
    def __init__(self, recipe, run: Run):
        from emocli.methods.sevlm.vad import read_lexicon

        self.recipe, self.run = recipe, run
        m = recipe.model
        lexicon = read_lexicon(m.vad_lexicon) if (m.vad_fusion or m.vad_head) else None
        self.pipeline = build_pipeline(
            m.vision, m.vision_config, m.decoder, m.decoder_config, m.tokenizer, lexicon,
            image_size=m.image_size, prompt=m.prompt, max_length=m.max_length, vad_fusion=m.vad_fusion,
            vad_head=m.vad_head, contrastive_head=m.contrastive_head, vad_layers=m.vad_layers,
            vad_heads=m.vad_heads, vad_ffn=m.vad_ffn, vad_dropout=m.vad_dropout)
        if lexicon is not None:
            known = int((self.pipeline.model.token_vad != 0).any(-1).sum())
            log.info("VAD lexicon: %d entries; %d of %d tokens have a VAD vector", len(lexicon), known,
                     len(self.pipeline.tokenizer))
        self.model, self.vision = self.pipeline.model, self.pipeline.vision
        data = PreparedArtEmis(recipe.data.prepared, recipe.data.images)
        paired = m.contrastive_head and recipe.loss.contrastive > 0
        train = data.artworks("contrastive" if paired else "train")[: recipe.data.max_train_artworks]
        self.train_dataset = ArtworkSequences(train, self.pipeline.layout, m.image_size, paired)
        if len(self.train_dataset) == 0:
            raise EmoError(f"{recipe.data.prepared} has no training artworks"
                           + (" with two distinct emotions (the contrastive subset)" if paired else ""))
        self.collate_fn = Collate(self.pipeline.layout)
        self.val = data.artworks("val")[: recipe.data.max_eval_images]
        self.weights = recipe.loss.model_dump()
        self.eval_bad: list[str] = []
        self.best_bleu4 = None
        self._read_best_bleu4()

    def param_groups(self, model):
        vad = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(("vad_encoder", "vad_fusion"))]
        rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("vad_encoder", "vad_fusion"))]
        groups = [{"params": rest, "lr": self.recipe.optim.lr}]
        if vad:
            groups.append({"params": vad, "lr": self.recipe.optim.vad_lr})
        return groups

    def setup(self, accelerator):
        self.vision.to(accelerator.device)  # frozen, fp32 (autocast runs its matmuls in the run's precision)

    def loss(self, model, batch):
        with torch.no_grad():
            image_tokens = encode_images(self.vision, batch["pixel_values"])[batch["image_index"]]
        return model(image_tokens, batch, self.weights)

    def evaluate(self, model, accelerator, step):
        if not self.val:
            return None
        from emocli.metrics.text import coco_caption_scores

        pipeline = SevlmPipeline(self.vision, accelerator.unwrap_model(model), self.pipeline.tokenizer)
        decode = self.recipe.decode.model_dump()
        with accelerator.autocast():
            results = explain_artworks(pipeline, self.val, self.recipe.data.eval_batch_size, decode, self.eval_bad)
        if not results:
            return None
        accuracy, scored = emotion_accuracy(results)
        hyps = {r["artwork"]["image_id"]: r["explanation"] for r in results}
        refs = {r["artwork"]["image_id"]: r["artwork"]["explanations"] for r in results}
        bleu4 = coco_caption_scores(hyps, refs, meteor=False, ptb=False)["BLEU-4"]
        if accelerator.is_main_process and (self.best_bleu4 is None or bleu4 > self.best_bleu4):
            self.best_bleu4 = bleu4
            self._export_best_bleu4(pipeline.model, step, bleu4)
        return {"emotion_accuracy": accuracy, "bleu4": bleu4, "majority_images": scored}

    def _read_best_bleu4(self):
        import json

        state = self.run.dir / "best-bleu4" / "best.json"
        if state.is_file():
            self.best_bleu4 = json.loads(state.read_text())["value"]

    def _export_best_bleu4(self, model, step, value):
        target = self.run.dir / "best-bleu4"
        tmp = target.with_name(".best-bleu4.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.save_pretrained(model, tmp / "model")
        write_json_atomic(tmp / "best.json", {"metric": "bleu4", "mode": "max", "value": value, "step": step})
        shutil.rmtree(target, ignore_errors=True)
        publish(tmp, target)

    def save_pretrained(self, model, directory, state_dict=None):
        SevlmPipeline.save_pretrained(Path(directory), model, self.vision, self.pipeline.tokenizer, state_dict)

    def finish(self, model, accelerator, run: Run):
        if accelerator.is_main_process:
            bad = sorted(set(self.train_dataset.bad_images) | set(self.eval_bad))
            write_json_atomic(run.final / "bad_images.json", {"count": len(bad), "paths": bad})
            if bad:
                log.warning("%d unreadable images were skipped (listed in %s)", len(bad), run.final / "bad_images.json")


def main(run: Run, resume: bool = False) -> None:
    accelerator = make_accelerator(run)
    task = SevlmTask(run.recipe, run)
    fit(task, run, accelerator, resume=resume)
