"""SEVLM (Zhang et al., ECCV 2024): a small emotional vision-language model for visual art, in one file.

Given an artwork it writes "<emotion> because <explanation>" after the prompt " the emotion is":
- a frozen CLIP vision tower (ViT-B/16) gives 196 patch tokens (after its final LayerNorm, no projection);
- a GPT-2 decoder (distilgpt2) reads them through cross-attention in every block; segment embeddings
  (`<emotion>` up to "because", `<explanation>` from "because" on) are looked up in the word embedding table
  and added, as in NLX-GPT;
- VAD fusion: every token has a (valence, arousal, dominance) vector (`vad.py`); a small causal transformer
  (d = 3) encodes the sequence of them, and at explanation positions the word embedding is replaced by
  Linear(concat(word embedding, VAD encoding));
- a VAD head (Linear d -> 3) predicts the next token's VAD, trained with an MSE masked to tokens the lexicon
  knows;
- a contrastive head scores (image, emotion part, explanation part) triples with an MLP; each positive has two
  negatives: the explanation of the same image's other annotation (different emotion) and an explanation of
  another image.

Choices that differ from the released code (each says why):
- The emotion/explanation boundary is found from the "because" tokens, not fixed at position 6, which is
  wrong for labels of several tokens ("something else").
- The VAD encoder is causal: position t sees the VAD of tokens <= t only. The original attended to all
  positions, so in training the explanation saw future ground-truth tokens that are absent at inference.
- The explanation mean for the contrastive head skips padding; the original averaged pads in.
- The fusion Linear starts as the identity on the word embedding (zero on the VAD part), so fine-tuning starts
  from the pretrained decoder; the original started from a random map. The fused vector then gets GPT-2's
  position and segment embeddings added (the original fused after adding them).
- Decoding recomputes the whole sequence every step (as the original) so the boundary, segments and VAD
  encoding of every step are those training used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from emocli.emotions import ARTEMIS
from emocli.errors import EmoError

CONFIG_NAME = "sevlm.json"
WEIGHTS_NAME = "model.safetensors"
TIED_KEY = "gpt.lm_head.weight"
PAD, EMOTION_SEGMENT, EXPLANATION_SEGMENT = "<pad>", "<emotion>", "<explanation>"
BECAUSE = " because"
# NLX-GPT and SEVLM normalise CLIP's input with ImageNet statistics, after a square resize (no crop)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SevlmConfig:
    vision: dict  # CLIPVisionConfig as a dict
    decoder: dict  # GPT2Config as a dict (add_cross_attention on)
    image_size: int = 224
    prompt: str = " the emotion is"
    max_length: int = 30
    vad_fusion: bool = True
    vad_head: bool = True
    contrastive_head: bool = True
    vad_layers: int = 3
    vad_heads: int = 1
    vad_ffn: int = 128
    vad_dropout: float = 0.1
    vad_max_positions: int = 512
    extra: dict = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> SevlmConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise EmoError(f"{directory} is not a SEVLM model folder (no {CONFIG_NAME})")
        return cls(**json.loads(path.read_text()))


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> (3, size, size) float tensor: square bilinear resize, ImageNet normalisation."""
    arr = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


# ---------------------------------------------------------------------------------------------- tokens


class SequenceLayout:
    """Token ids of the prompt, "because" and the special tokens; builds and splits sequences.

    A sequence is `bos + prompt + emotion + because + explanation + eos`, padded to `max_length`.
    """

    def __init__(self, tokenizer, prompt: str, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos = self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.convert_tokens_to_ids(PAD)
        self.emotion_segment = tokenizer.convert_tokens_to_ids(EMOTION_SEGMENT)
        self.explanation_segment = tokenizer.convert_tokens_to_ids(EXPLANATION_SEGMENT)
        self.prompt = [self.bos] + tokenizer.encode(prompt)
        self.because = tokenizer.encode(BECAUSE)

    def encode(self, emotion: str, explanation: str) -> list[int]:
        ids = (self.prompt + self.tokenizer.encode(" " + emotion) + self.because
               + self.tokenizer.encode(" " + explanation.strip()) + [self.eos])
        return ids[: self.max_length]

    def because_start(self, ids: list[int]) -> int | None:
        """Position of the first "because" after the prompt, or None."""
        n = len(self.because)
        for i in range(len(self.prompt), len(ids) - n + 1):
            if ids[i:i + n] == self.because:
                return i
        return None

    def batch(self, sequences: list[list[int]], length: int | None = None) -> dict[str, torch.Tensor]:
        """Pad and describe a batch: input_ids, attention_mask, segment_ids, labels, explanation_start."""
        length = length or max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        segments = torch.full((len(sequences), length), self.emotion_segment, dtype=torch.long)
        starts = torch.full((len(sequences),), length, dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            because = self.because_start(seq)
            if because is not None:
                segments[row, because:] = self.explanation_segment
                starts[row] = because + len(self.because)
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, 0] = -100  # bos is never predicted; the prompt words are (as in the original)
        return {"input_ids": ids, "attention_mask": mask, "segment_ids": segments, "labels": labels,
                "explanation_start": starts}

    def split_text(self, text: str) -> tuple[str, str]:
        """(emotion, explanation) of generated text: before / after the first "because".

        Without "because": a leading emotion label is taken as the emotion and the rest as the explanation.
        (The original took the text after the *last* "because", and dropped two words when there was none.)
        """
        text = " ".join(text.split())
        head, sep, tail = text.partition(BECAUSE.strip())
        if sep and (not head or head.endswith(" ")):
            return head.strip(), tail.strip()
        for label in sorted(ARTEMIS.labels, key=len, reverse=True):
            if text.startswith(label):
                return label, text[len(label):].strip()
        return "", text


# ----------------------------------------------------------------------------------------------- model


class VadEncoder(nn.Module):
    """A tiny causal transformer over per-token VAD vectors (d = 3, post-LN, extra outer residual)."""

    def __init__(self, layers: int, heads: int, ffn: int, dropout: float, max_positions: int):
        super().__init__()
        self.positions = nn.Embedding(max_positions, 3)
        self.norm = nn.LayerNorm(3)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(3, heads, ffn, dropout, batch_first=True) for _ in range(layers))

    def forward(self, vad: torch.Tensor) -> torch.Tensor:
        length = vad.shape[1]
        x = self.norm(vad + self.positions(torch.arange(length, device=vad.device)))
        causal = torch.triu(torch.full((length, length), float("-inf"), device=vad.device), diagonal=1)
        for layer in self.layers:
            x = x + layer(x, src_mask=causal, is_causal=True)
        return x


class ContrastiveHead(nn.Module):
    """s(image, emotion, explanation): MLP 3d -> d -> d -> d -> d -> 1 with ReLUs (raw score, no temperature)."""

    def __init__(self, dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(3 * dim, dim), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(dim, dim), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dim, 1))

    def forward(self, image, emotion, explanation):
        return self.mlp(torch.cat([image, emotion, explanation], dim=-1)).squeeze(-1)


class SevlmModel(nn.Module):
    """The trainable part: GPT-2 with cross-attention, VAD encoder + fusion, VAD head, contrastive head.

    `token_vad` (vocab, 3) is a saved buffer, so a trained model explains images without the lexicon.
    """

    def __init__(self, config: SevlmConfig, token_vad: torch.Tensor | None = None, gpt=None):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.config = config
        self.gpt = gpt if gpt is not None else GPT2LMHeadModel(
            GPT2Config(**{**config.decoder, "add_cross_attention": True}))
        gpt_config = self.gpt.config
        dim, vision_dim = gpt_config.n_embd, config.vision["hidden_size"]
        self.visual_proj = nn.Identity() if vision_dim == dim else nn.Linear(vision_dim, dim)
        vocab = gpt_config.vocab_size
        self.register_buffer("token_vad", token_vad if token_vad is not None else torch.zeros(vocab, 3))
        if config.vad_fusion:
            self.vad_encoder = VadEncoder(config.vad_layers, config.vad_heads, config.vad_ffn, config.vad_dropout,
                                          config.vad_max_positions)
            self.vad_fusion = nn.Linear(dim + 3, dim)
            with torch.no_grad():  # identity on the word embedding: start from the pretrained decoder
                self.vad_fusion.weight.zero_()
                self.vad_fusion.weight[:, :dim].copy_(torch.eye(dim))
                self.vad_fusion.bias.zero_()
        self.vad_head = nn.Linear(dim, 3) if config.vad_head else None
        self.contrastive_head = ContrastiveHead(dim) if config.contrastive_head else None

    def forward(self, image_tokens, batch: dict, loss_weights: dict | None = None):
        """With `loss_weights`: (weighted loss, {loss name: value}); else the logits (B, L, vocab).

        `image_tokens` (B, P, vision dim) holds one row per sequence; `batch` comes from `SequenceLayout.batch`.
        """
        if loss_weights is not None:
            return self.losses(image_tokens, batch, loss_weights)
        logits, _, _ = self.decode(image_tokens, batch["input_ids"], batch["attention_mask"], batch["segment_ids"],
                                   batch["explanation_start"])
        return logits

    def decode(self, image_tokens, input_ids, attention_mask, segment_ids, explanation_start):
        """(logits, final hidden states after GPT-2's last LayerNorm, projected image tokens)."""
        image_tokens = self.visual_proj(image_tokens)
        embeds = self.gpt.transformer.wte(input_ids)
        if self.config.vad_fusion:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            explanation = (positions[None, :] >= explanation_start[:, None]).unsqueeze(-1)
            vad = self.vad_encoder(self.token_vad[input_ids].to(embeds.dtype))
            fused = self.vad_fusion(torch.cat([embeds, vad], dim=-1))
            embeds = torch.where(explanation, fused, embeds)
        hidden = self.gpt.transformer(inputs_embeds=embeds, attention_mask=attention_mask, token_type_ids=segment_ids,
                                      encoder_hidden_states=image_tokens, use_cache=False).last_hidden_state
        return self.gpt.lm_head(hidden), hidden, image_tokens

    def losses(self, image_tokens, batch, weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the LM, VAD and contrastive losses, and each loss for the log."""
        logits, hidden, image_tokens = self.decode(image_tokens, batch["input_ids"], batch["attention_mask"],
                                                   batch["segment_ids"], batch["explanation_start"])
        logits, labels = logits[:, :-1], batch["labels"][:, 1:]
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        total, logs = weights["lm"] * lm, {"loss_lm": lm.item()}
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
        in_explanation = (positions >= batch["explanation_start"][:, None]) & (batch["attention_mask"] > 0)
        if self.vad_head is not None and weights["vad"] > 0:
            vad = self.vad_loss(hidden, batch["input_ids"], in_explanation)
            total, logs["loss_vad"] = total + weights["vad"] * vad, vad.item()
        if self.contrastive_head is not None and weights["contrastive"] > 0 and hidden.shape[0] >= 4:
            cl = self.contrastive_loss(image_tokens, hidden, in_explanation, batch["attention_mask"] > 0)
            total, logs["loss_contrastive"] = total + weights["contrastive"] * cl, cl.item()
        return total, logs

    def vad_loss(self, hidden, input_ids, in_explanation):
        """MSE between the predicted and the lexicon VAD of the next token, over explanation tokens the
        lexicon knows (all-zero targets are unknown words, pads, special tokens)."""
        predicted = self.vad_head(hidden[:, :-1]).float()
        target = self.token_vad[input_ids[:, 1:]].float()
        known = in_explanation[:, 1:] & (target != 0).any(-1)
        if not known.any():
            return predicted.sum() * 0.0
        return F.mse_loss(predicted[known], target[known])

    def contrastive_loss(self, image_tokens, hidden, in_explanation, valid):
        """Pairs of rows (2k, 2k+1) are one image with two annotations of different emotions.

        Positive (I_i, E_i, X_i); negatives (I_i, E_i, X_partner) and (I_i, E_i, X of another image).
        """
        def masked_mean(mask):
            mask = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

        rows = hidden.shape[0] - hidden.shape[0] % 2
        image = image_tokens.mean(1)[:rows]
        emotion = masked_mean(valid & ~in_explanation)[:rows]
        explanation = masked_mean(in_explanation)[:rows]
        partner = torch.arange(rows, device=hidden.device) ^ 1
        shift = 2 * int(torch.randint(1, rows // 2, ()).item())  # whole pairs, so never the same image
        other = (torch.arange(rows, device=hidden.device) + shift) % rows
        scores = torch.stack([
            self.contrastive_head(image, emotion, explanation),
            self.contrastive_head(image, emotion, explanation[partner]),
            self.contrastive_head(image, emotion, explanation[other]),
        ], dim=1).float()
        return F.cross_entropy(scores, torch.zeros(rows, dtype=torch.long, device=hidden.device))


# -------------------------------------------------------------------------------------------- pipeline


def encode_images(vision, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLIP patch tokens (CLS dropped) after the vision tower's final LayerNorm."""
    hidden = vision(pixel_values=pixel_values).last_hidden_state[:, 1:]
    return getattr(vision, "vision_model", vision).post_layernorm(hidden)  # transformers 5 flattened the tower


class SevlmPipeline:
    """Frozen CLIP vision tower + `SevlmModel` + tokenizer: load, save, explain images."""

    def __init__(self, vision, model: SevlmModel, tokenizer):
        self.vision, self.model, self.tokenizer = vision, model, tokenizer
        self.config = model.config
        self.layout = SequenceLayout(tokenizer, self.config.prompt, self.config.max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device, dtype=None):
        self.vision.to(device, dtype=dtype)
        self.model.to(device)
        return self

    @classmethod
    def from_pretrained(cls, directory, device: str | torch.device = "cpu") -> SevlmPipeline:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, CLIPVisionModel

        directory = Path(directory)
        config = SevlmConfig.load(directory)
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        vision = CLIPVisionModel.from_pretrained(str(directory / "vision")).eval().requires_grad_(False)
        model = SevlmModel(config)
        missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=False)
        if [k for k in missing if k != TIED_KEY] or unexpected:
            raise EmoError(f"{directory / WEIGHTS_NAME} does not match {CONFIG_NAME} (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
        return cls(vision, model.eval(), tokenizer).to(device)

    @staticmethod
    def save_pretrained(directory, model: SevlmModel, vision, tokenizer, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.config.save(directory)
        state = state_dict if state_dict is not None else model.state_dict()
        # GPT-2's output layer is tied to its word embedding: saved once, tied again on loading
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items() if k != TIED_KEY},
                  str(directory / WEIGHTS_NAME))
        vision.save_pretrained(str(directory / "vision"))
        tokenizer.save_pretrained(str(directory / "tokenizer"))

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, max_new_tokens: int = 25, greedy: bool = True,
                 temperature: float = 1.0, top_p: float = 0.9, generator: torch.Generator | None = None) -> list[str]:
        """Texts after the prompt ("<emotion> because <explanation>"), greedy or top-p sampling."""
        model, layout = self.model, self.layout
        device = self.device
        dtype = next(self.vision.parameters()).dtype
        image_tokens = encode_images(self.vision, pixel_values.to(device, dtype))
        image_tokens = image_tokens.to(next(model.parameters()).dtype)
        rows = pixel_values.shape[0]
        sequences = [list(layout.prompt) for _ in range(rows)]
        done = [False] * rows
        for _ in range(max_new_tokens):
            batch = {k: v.to(device) for k, v in layout.batch(sequences).items()}
            logits = model(image_tokens, batch)[:, -1].float()
            logits[:, [layout.pad, layout.emotion_segment, layout.explanation_segment]] = float("-inf")
            if greedy:
                next_ids = logits.argmax(-1)
            else:
                next_ids = _sample_top_p(logits / max(temperature, 1e-6), top_p, generator)
            for row, token in enumerate(next_ids.tolist()):
                if not done[row]:
                    sequences[row].append(token)
                    done[row] = token == layout.eos
                else:
                    sequences[row].append(layout.eos)
            if all(done):
                break
        texts = []
        for seq in sequences:
            generated = seq[len(layout.prompt):]
            if layout.eos in generated:
                generated = generated[:generated.index(layout.eos)]
            texts.append(self.tokenizer.decode(generated, skip_special_tokens=True).strip())
        return texts

    def explain(self, images: list[Image.Image], **kwargs) -> list[dict]:
        """[{"text", "emotion", "explanation"}] for PIL images."""
        pixels = torch.stack([image_to_tensor(im, self.config.image_size) for im in images])
        out = []
        for text in self.generate(pixels, **kwargs):
            emotion, explanation = self.layout.split_text(text)
            out.append({"text": text, "emotion": emotion, "explanation": explanation})
        return out


def _sample_top_p(logits: torch.Tensor, top_p: float, generator) -> torch.Tensor:
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # the smallest set whose mass reaches top_p
    sorted_probs = sorted_probs * keep
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, choice).squeeze(-1)


def build_pipeline(vision_path: str | None, vision_config: dict | None, decoder_path: str | None,
                   decoder_config: dict | None, tokenizer_path: str | None, lexicon: dict | None,
                   **options) -> SevlmPipeline:
    """A new SEVLM from pretrained (or, with a null path, randomly initialised) CLIP vision and GPT-2 parts."""
    from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel

    from emocli.methods.sevlm.vad import token_vad_table

    if vision_path:
        vision = CLIPVisionModel.from_pretrained(vision_path)
    else:
        vision = CLIPVisionModel(CLIPVisionConfig(**(vision_config or {})))
    vision.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or decoder_path)
    tokenizer.add_special_tokens({"pad_token": PAD, "additional_special_tokens": [EMOTION_SEGMENT, EXPLANATION_SEGMENT]})
    if decoder_path:
        gpt = GPT2LMHeadModel.from_pretrained(decoder_path, add_cross_attention=True)
    else:
        gpt = GPT2LMHeadModel(GPT2Config(**{**(decoder_config or {}), "add_cross_attention": True}))
    if len(tokenizer) > gpt.config.vocab_size:  # the three added tokens (a random-weight decoder may be larger)
        gpt.resize_token_embeddings(len(tokenizer))
    decoder = gpt.config.to_dict()
    for key in ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"):
        decoder.pop(key, None)
    decoder["pad_token_id"] = tokenizer.convert_tokens_to_ids(PAD)
    config = SevlmConfig(vision={"hidden_size": vision.config.hidden_size}, decoder=decoder, **options)
    needs_vad = config.vad_fusion or config.vad_head
    token_vad = token_vad_table(tokenizer, lexicon, gpt.config.vocab_size) if needs_vad and lexicon else None
    return SevlmPipeline(vision, SevlmModel(config, token_vad, gpt=gpt), tokenizer)
