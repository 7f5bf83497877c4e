"""`emo sample`'s generator (EmoGenSampler) vs plain StableDiffusionPipeline on the same components.

Both make the same number of images with the same scheduler, steps, guidance and batch size;
ours also samples emotion vectors, maps them and injects them. Rounds are interleaved in one run.

    python benchmarks/sample.py                      # tiny SD on CPU
    python benchmarks/sample.py --sd PATH --device cuda --dtype fp16 --steps 50   # a real SD folder
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from emocli.emotion_space import EmotionSpace
from emocli.methods.emogen.mapper import Mapper
from emocli.methods.emogen.sample import EmoGenSampler, load_sd_pipeline, set_scheduler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sd", default=None, help="SD folder; default: a tiny one built now")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    sd = args.sd
    if sd is None:
        from emocli.testing.tiny import make_tiny

        sd = str(make_tiny(tempfile.mkdtemp(), which=("sd",))["sd"])
    pipe = load_sd_pipeline(sd, dtype=dtype, device=args.device)
    hidden = pipe.text_encoder.get_input_embeddings().embedding_dim
    space = EmotionSpace(torch.randn(8, 768), torch.rand(8, 768))
    sampler = EmoGenSampler(pipe, Mapper(768, hidden).to(args.device), space, allow_foreign_space=True)

    def ours():
        list(sampler.generate("fear", n=args.n, seed=0, steps=args.steps, guidance=7.5, batch_size=args.n))

    def plain():
        set_scheduler(pipe, "unipc")
        generators = [torch.Generator(args.device).manual_seed(i) for i in range(args.n)]
        pipe(["a photo"] * args.n, num_inference_steps=args.steps, guidance_scale=7.5, generator=generators)

    runs = {"emo sample": ours, "StableDiffusionPipeline": plain}
    elapsed = dict.fromkeys(runs, 0.0)
    for fn in runs.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            elapsed[name] += time.perf_counter() - t
    rate = {k: args.rounds * args.n / v for k, v in elapsed.items()}
    print(f"{sd} on {args.device} {args.dtype}: {args.n} images x {args.steps} steps, {args.rounds} rounds")
    for name, value in rate.items():
        print(f"  {name:24s} {value:8.2f} images/s")
    print(f"  ratio (ours / plain)     {rate['emo sample'] / rate['StableDiffusionPipeline']:8.3f}")


if __name__ == "__main__":
    main()
