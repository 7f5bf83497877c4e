"""EmoGen training step: ours vs the original code's way, same model, same run.

Ours: real batches, frozen UNet/VAE/text encoder (no parameter gradients), the mapper output
injected differentiably (emocli.methods.emogen.injection).
Original: batch 1 with gradient accumulation to the same total batch, UNet parameters not frozen
(their gradients are computed and thrown away), the mapper output written into the embedding
matrix through `.data`, the embedding row's gradient pushed into the mapper by a hook and a
second backward pass.

    python benchmarks/emogen_train.py                 # tiny SD on CPU
    python benchmarks/emogen_train.py --full --device cuda --dtype bf16   # SD 1.5 architecture, random weights

Prints samples/s of both and their ratio, measured in one run, interleaved.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from emocli.methods.emogen.injection import add_placeholders, encode_with_vectors, tokenize
from emocli.methods.emogen.mapper import Mapper


def components(full: bool, device, dtype):
    from emocli.testing.tiny import tiny_sd_components

    parts = tiny_sd_components(0)
    if full:  # SD 1.5's UNet and VAE architectures with random weights; the tiny text encoder's width is widened
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        with torch.device(device):  # initialised where they run: random init of 1B parameters on CPU is slow
            parts["unet"] = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
            parts["vae"] = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                                         down_block_types=("DownEncoderBlock2D",) * 4,
                                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                                         sample_size=512)
            tok = parts["tokenizer"]
            parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id))
    for name in ("unet", "vae", "text_encoder"):
        parts[name].to(device, dtype).requires_grad_(False)
    return parts


def make_batch(parts, batch, device, dtype, resolution):
    with torch.no_grad():
        images = torch.rand(batch, 3, resolution, resolution, device=device, dtype=dtype) * 2 - 1
        latents = parts["vae"].encode(images).latent_dist.sample() * parts["vae"].config.scaling_factor
    return latents, torch.randn(batch, 768, device=device)


def diffusion_loss(parts, latents, hidden):
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (latents.shape[0],), device=latents.device)
    noisy = parts["scheduler"].add_noise(latents, noise, t)
    pred = parts["unet"](noisy, t, encoder_hidden_states=hidden.to(latents.dtype)).sample
    return F.mse_loss(pred.float(), noise.float())


def ours_step(parts, mapper, optimizer, pid, ids, latents, vectors):
    tokens = mapper(vectors)
    text = encode_with_vectors(parts["text_encoder"], ids.expand(len(vectors), -1), {pid: tokens.to(latents.dtype)})
    loss = diffusion_loss(parts, latents, text.last_hidden_state)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def original_step(parts, mapper, optimizer, pid, ids, latents, vectors):
    """The released code's mechanics, per sample with accumulation over the batch."""
    unet, text_encoder = parts["unet"], parts["text_encoder"]
    unet.requires_grad_(True)  # never frozen in the original
    emb = text_encoder.get_input_embeddings()
    emb.weight.requires_grad_(True)
    for i in range(len(vectors)):
        pred_emd = mapper(vectors[i:i + 1])
        emb.weight.data[pid] = pred_emd[0].detach().to(emb.weight.dtype)
        hidden = text_encoder(input_ids=ids).last_hidden_state
        loss = diffusion_loss(parts, latents[i:i + 1], hidden) / len(vectors)
        loss.backward()
        grad = emb.weight.grad[pid].clone()
        handle = pred_emd.register_hook(lambda g, grad=grad: g + grad.to(g.dtype)[None])
        (0 * pred_emd.mean()).backward()
        handle.remove()
        emb.weight.grad = None
    unet.zero_grad(set_to_none=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    unet.requires_grad_(False)
    emb.weight.requires_grad_(False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="SD 1.5 architecture with random weights (GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    parts = components(args.full, args.device, dtype)
    tok = parts["tokenizer"]
    # The original resized the embedding matrix for its placeholder; so do both sides here.
    pid = add_placeholders(tok, ["<emotion>"])[0]
    parts["text_encoder"].resize_token_embeddings(len(tok))
    parts["text_encoder"].requires_grad_(False)
    ids = tokenize(tok, ["<emotion>"], args.device)
    hidden = parts["text_encoder"].get_input_embeddings().embedding_dim
    mapper = Mapper(768, hidden).to(args.device)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-3)
    resolution = 512 if args.full else 32
    latents, vectors = make_batch(parts, args.batch, args.device, dtype, resolution)
    steps = {"ours": ours_step, "original": original_step}
    elapsed = {k: 0.0 for k in steps}
    for fn in steps.values():  # warm-up
        fn(parts, mapper, optimizer, pid, ids, latents, vectors)
    for _ in range(args.rounds):
        for name, fn in steps.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn(parts, mapper, optimizer, pid, ids, latents, vectors)
            if args.device == "cuda":
                torch.cuda.synchronize()
            elapsed[name] += time.perf_counter() - t
    rate = {k: args.rounds * args.batch / v for k, v in elapsed.items()}
    model = "SD 1.5 architecture (random weights)" if args.full else "tiny SD"
    print(f"{model} on {args.device} {args.dtype}, batch {args.batch}, {args.rounds} rounds")
    print(f"  ours     {rate['ours']:8.2f} samples/s")
    print(f"  original {rate['original']:8.2f} samples/s")
    print(f"  ratio    {rate['ours'] / rate['original']:8.2f}x")


if __name__ == "__main__":
    main()
