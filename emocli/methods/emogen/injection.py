"""Differentiable placeholder injection into a CLIP text encoder.

The original EmoGen wrote the mapper output into the embedding matrix through `.data` and pushed
the row's gradient back into the mapper with a hook. Here the token-embedding *output* (the
text transformer's inputs_embeds) is replaced at the placeholder positions inside the forward
pass, so autograd carries the loss to the mapper directly, per sample, with no writes to any
weight and no gradient hooks. Placeholder tokens are added to the tokenizer only; the text
encoder's embedding matrix is never resized.
"""

from __future__ import annotations

import torch


def add_placeholders(tokenizer, tokens: list[str]) -> list[int]:
    """Add placeholder tokens (idempotent) and return their ids."""
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    special = set(tokenizer.all_special_ids)
    for token, token_id in zip(tokens, ids):
        if token_id in special or token_id == tokenizer.unk_token_id:
            raise ValueError(f"placeholder {token!r} maps onto special token id {token_id}")
    return ids


def tokenize(tokenizer, prompts: list[str], device=None) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return ids.to(device) if device is not None else ids


def encode_with_vectors(text_encoder, input_ids: torch.Tensor, vectors: dict[int, torch.Tensor]):
    """Run `text_encoder` on `input_ids`, with the embedding of each placeholder id replaced by the
    matching row of `vectors[id]` ([batch, hidden]). Returns the encoder output (last_hidden_state,
    pooler_output)."""
    embedding = text_encoder.get_input_embeddings()
    masks = {token_id: (input_ids == token_id) for token_id in vectors}
    for token_id, mask in masks.items():
        if not bool(mask.any(dim=1).all()):
            raise ValueError(f"placeholder id {token_id} is missing from some prompts")
    # Added placeholder ids may lie beyond the embedding table: look up a harmless id there instead.
    safe_ids = torch.where(input_ids >= embedding.num_embeddings, torch.zeros_like(input_ids), input_ids)

    def replace(module, args, output):
        for token_id, mask in masks.items():
            vec = vectors[token_id].to(output.dtype)[:, None, :]
            output = torch.where(mask[..., None], vec, output)
        return output

    handle = embedding.register_forward_hook(replace)
    try:
        return text_encoder(input_ids=safe_ids)
    finally:
        handle.remove()
