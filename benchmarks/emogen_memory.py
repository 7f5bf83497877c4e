"""Peak memory of one EmoGen training step on the SD 1.5 architecture (random weights), with and
without gradient checkpointing of the UNet and the text encoder: the basis of the estimate in
recipes/emogen.yaml's header.

Each setting runs in a fresh process and reports its peak resident memory (CPU) or peak allocated
CUDA memory; the weights-only process gives the baseline, so "step - baseline" is what one training
step adds (activations kept for the backward pass, gradients of the mapper, temporaries).

    python benchmarks/emogen_memory.py                       # CPU, fp32, batch 1, 512 px
    python benchmarks/emogen_memory.py --device cuda --dtype fp16 --batch 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SETTINGS = {"weights only": (None, None), "no checkpointing": (False, False),
            "UNet checkpointing": (True, False), "UNet + text encoder checkpointing": (True, True)}


def measure(setting: str, device: str, dtype: str, batch: int, resolution: int) -> dict:
    import torch

    from benchmarks.emogen_train import components
    from emocli.methods.emogen.injection import add_placeholders, encode_with_vectors, tokenize
    from emocli.methods.emogen.mapper import Mapper

    torch.manual_seed(0)
    unet_ckpt, text_ckpt = SETTINGS[setting]
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    parts = components(True, device, torch_dtype)
    mapper = Mapper(768, 768).to(device)
    pid = add_placeholders(parts["tokenizer"], ["<emotion>"])[0]
    ids = tokenize(parts["tokenizer"], ["<emotion>"], device)
    latents = torch.randn(batch, 4, resolution // 8, resolution // 8, device=device, dtype=torch_dtype)
    vectors = torch.randn(batch, 768, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if unet_ckpt is not None:
        if unet_ckpt:
            parts["unet"].enable_gradient_checkpointing()
        if text_ckpt:
            parts["text_encoder"].gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            parts["text_encoder"].train()
        tokens = mapper(vectors)
        hidden = encode_with_vectors(parts["text_encoder"], ids.expand(batch, -1), {pid: tokens.to(torch_dtype)})
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(latents)
        pred = parts["unet"](parts["scheduler"].add_noise(latents, noise, t), t,
                             encoder_hidden_states=hidden.last_hidden_state).sample
        torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        assert mapper.net[0].weight.grad is not None
    seconds = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"setting": setting, "peak_gib": round(peak, 2), "step_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.dtype, args.batch, args.resolution)))
        return
    rows = []
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--one", setting, "--device", args.device, "--dtype",
                              args.dtype, "--batch", str(args.batch), "--resolution", str(args.resolution)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["peak_gib"]
    print(f"\n{args.device} {args.dtype}, batch {args.batch}, {args.resolution} px; weights-only peak {base:.2f} GiB")
    for row in rows[1:]:
        print(f"{row['setting']:>36}: peak {row['peak_gib']:6.2f} GiB, step adds {row['peak_gib'] - base:6.2f} GiB, "
              f"{row['step_s']:.1f} s")


if __name__ == "__main__":
    main()
