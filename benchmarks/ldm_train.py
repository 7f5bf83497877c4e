"""LDM training throughput: `emo train ldm` (the shared loop, online encoding and cached latents + text)
vs a plain `train_text_to_image.py`-style loop, same models, same data, same batch, in one run.

    python benchmarks/ldm_train.py                          # tiny models, CPU
    python benchmarks/ldm_train.py --shape small            # SD's VAE layout (x8, 4 levels) and a 3-level UNet, narrow
    python benchmarks/ldm_train.py --full --device cuda     # seed 004's shape: recipes/ldm.yaml's UNet, SD VAE, CLIP-B/32

`--mode runs` (default): every configuration runs `--rounds` times, interleaved (ours, plain, cached, ours,
...), ours through the real `fit`; the median samples/s of each, measured over the second half of the steps.
`--mode steps`: the three set up once in one process, then single optimizer steps alternate between them
(ours = `LdmTask.loss` + backward + AdamW, what `fit` runs per step), so a busy machine slows all three alike;
the median step time of each is compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def build_models(shape: str, root: Path) -> dict:
    """Random-weight folders: clip/ (CLIPTextModel + tokenizer), sd/vae/; returns UNet overrides for the recipe."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from emocli.testing.tiny import build_clip_tokenizer, make_tiny

    if shape == "tiny":
        make_tiny(root, which=("sd", "clip"))
        return {"resolution": 32, "overrides": []}
    tok = build_clip_tokenizer(root / "clip")
    width, layers, heads = (512, 12, 8) if shape == "seed" else (128, 4, 4)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width,
                                 num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(root / "clip")
    channels = (128, 256, 512, 512) if shape == "seed" else (32, 64, 128, 128)
    AutoencoderKL(block_out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                  norm_num_groups=32, sample_size=256).save_pretrained(root / "sd" / "vae")
    if shape == "seed":  # recipes/ldm.yaml's UNet as it is
        return {"resolution": 256, "overrides": []}
    return {"resolution": 128, "overrides": [
        "model.unet_config.sample_size=16", "model.unet_config.block_out_channels=[64,128,192]",
        "model.unet_config.layers_per_block=1", "model.unet_config.norm_num_groups=32"]}


def recipe_for(shape, models, device, root, prepared, out, batch, steps, extra):
    from emocli.recipes.load import load_recipe

    name = "tiny/ldm" if shape == "tiny" else "ldm"
    return load_recipe(name, [
        f"model.text_encoder={root / ('models/clip' if shape == 'tiny' else 'clip')}",
        f"model.vae={root / ('models/sd' if shape == 'tiny' else 'sd')}", f"data.prepared={prepared}",
        f"data.resolution={models['resolution']}", f"run.output_dir={out}", f"train.batch_size={batch}",
        "train.grad_accum=1", f"train.max_steps={steps}", f"train.log_every={steps // 2}", "train.eval_every=100000",
        "train.checkpoint_every=100000", "train.num_workers=0", "~train.ema", "train.trackers=[]",
        "loss.lpips_weight=0.0", "loss.kl_weight=0.0", "data.cache_latents=false", "data.cache_text=false",
        "launch.mixed_precision=" + ("bf16" if device == "cuda" else "'no'"),
        "validation.prompts=[a red circle]", "validation.steps=1", "validation.images_per_prompt=1",
        *models["overrides"], *extra])


def ours(recipe) -> float:
    """samples/s of `fit` over the second half of its steps (metrics.jsonl's steps_per_s)."""
    from emocli.runs import prepare_run
    from emocli.worker import run_method

    run = prepare_run(recipe, ["benchmark"])
    run_method(run.dir, False)
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    rate = [r["steps_per_s"] for r in records if "steps_per_s" in r][-1]
    return rate * recipe.train.batch_size


def plain(recipe, steps: int, warmup: int, device: str) -> float:
    """The diffusers example's loop: tokenize in the dataset, encode with the VAE and the text encoder every step."""
    from accelerate import Accelerator

    from emocli.data.captions import PreparedCaptions
    from emocli.methods.ldm.train import build_unet, load_frozen, noise_scheduler, tokenize, vae_pixels

    torch.manual_seed(0)
    acc = Accelerator(mixed_precision=recipe.launch.mixed_precision, cpu=device == "cpu")
    dtype = {"bf16": torch.bfloat16}.get(recipe.launch.mixed_precision, torch.float32)
    tokenizer, text_encoder, vae = load_frozen(recipe.model)
    unet = build_unet(recipe.model, text_encoder.config.hidden_size, vae.config.latent_channels).train()
    scheduler = noise_scheduler(recipe.model)
    records = PreparedCaptions(recipe.data.prepared).records("train")
    d = recipe.data

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(records)

        def __getitem__(self, i):
            r = records[i]
            caption = r["captions"][int(torch.randint(0, len(r["captions"]), ()))]
            return {"pixel_values": vae_pixels(r["image"], d.resolution, d.center_crop),
                    "input_ids": tokenize(tokenizer, [caption])[0]}

    loader = torch.utils.data.DataLoader(Rows(), batch_size=recipe.train.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay)
    unet, optimizer, loader = acc.prepare(unet, optimizer, loader)
    vae.to(acc.device, dtype)
    text_encoder.to(acc.device, dtype)
    done, start = 0, None
    while done < steps:
        for batch in loader:
            if done == warmup:
                if acc.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with acc.accumulate(unet):
                with torch.no_grad():
                    latents = vae.encode(batch["pixel_values"].to(dtype)).latent_dist.sample()
                    latents = latents * vae.config.scaling_factor
                    hidden = text_encoder(batch["input_ids"], return_dict=False)[0]
                noise = torch.randn_like(latents)
                t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
                noisy = scheduler.add_noise(latents, noise, t)
                with acc.autocast():
                    pred = unet(noisy, t, hidden, return_dict=False)[0]
                loss = F.mse_loss(pred.float(), noise.float())
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(unet.parameters(), recipe.train.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            done += 1
            if done >= steps:
                break
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    return (steps - warmup) * recipe.train.batch_size / (time.perf_counter() - start)


def interleaved_steps(recipes: dict, steps: int) -> dict[str, list[float]]:
    """Per configuration, the seconds of each of `steps` optimizer steps, the configurations taking turns."""
    from accelerate import Accelerator

    from emocli.data.captions import PreparedCaptions
    from emocli.methods.ldm.train import LdmTask, tokenize, vae_pixels
    from emocli.runs import prepare_run

    acc = Accelerator(cpu=True)
    setups = {}
    for name, recipe in recipes.items():
        task = LdmTask(recipe, prepare_run(recipe, ["benchmark"]))
        task.setup(acc)
        opt = torch.optim.AdamW(task.model.parameters(), lr=recipe.optim.lr)
        n = recipe.train.batch_size
        if name == "plain loop":  # the example's step: tokenize + VAE + text encoder inline, no emo machinery
            records = PreparedCaptions(recipe.data.prepared).records("train")[:n]

            def step(task=task, opt=opt, records=records, d=recipe.data, n=n):
                pixels = torch.stack([vae_pixels(r["image"], d.resolution, d.center_crop) for r in records])
                ids = tokenize(task.tokenizer, [r["captions"][0] for r in records])
                with torch.no_grad():
                    latents = task.vae.encode(pixels).latent_dist.sample() * task.vae.config.scaling_factor
                    hidden = task.text_encoder(ids, return_dict=False)[0]
                noise = torch.randn_like(latents)
                t = torch.randint(0, 1000, (n,))
                pred = task.model(task.noise_scheduler.add_noise(latents, noise, t), t, hidden).sample
                F.mse_loss(pred.float(), noise.float()).backward()
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
        else:
            def step(task=task, opt=opt, n=n):
                batch = torch.utils.data.default_collate([task.train_dataset[i] for i in range(n)])
                task.loss(task.model, batch)[0].backward()
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
        setups[name] = step
    times = {name: [] for name in setups}
    for i in range(steps + 1):
        for name, step in setups.items():
            t = time.perf_counter()
            step()
            if i:  # the first step of each is a warm-up
                times[name].append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=("tiny", "small", "seed"), default="tiny")
    p.add_argument("--full", action="store_true", help="the seed's shape (same as --shape seed)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 8 (tiny/small), 64 (seed)")
    p.add_argument("--steps", type=int, default=8, help="steps per measurement (the second half is timed)")
    p.add_argument("--images", type=int, default=None, help="training images (default: 2 batches)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mode", choices=("runs", "steps"), default="runs")
    args = p.parse_args()
    shape = "seed" if args.full else args.shape
    batch = args.batch or (64 if shape == "seed" else 8)
    from emocli.data.captions import prepare_captions, synth_captions

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_models(shape, root / "models" if shape == "tiny" else root)
        size = models["resolution"]
        prepared = prepare_captions(synth_captions(root / "src", n=args.images or 2 * batch, size=max(64, size)),
                                    root / "prepared", test_fraction=0.0)
        if args.mode == "steps":
            cached = ["data.cache_latents=true", "data.cache_text=true", f"data.cache_dir={root / 'cache'}"]
            recipes = {name: recipe_for(shape, models, "cpu", root, prepared, root / name.replace(" ", "_").replace(
                ",", ""), batch, args.steps, extra) for name, extra in (("plain loop", []), ("emo train ldm", []),
                                                                        ("emo train ldm, cached", cached))}
            times = interleaved_steps(recipes, args.steps)
            base = statistics.median(times["plain loop"])
            print(f"\nshape {shape}, cpu, batch {batch}, {args.steps} interleaved steps each (median step time)")
            for name, values in times.items():
                m = statistics.median(values)
                print(f"{name:24s} {batch / m:8.2f} samples/s  x{base / m:.2f} vs plain")
            print(f"cached latents + text vs online (both emo): "
                  f"x{statistics.median(times['emo train ldm']) / statistics.median(times['emo train ldm, cached']):.2f}")
            return
        runs = {"plain loop": [], "emo train ldm": [], "emo train ldm, cached": []}
        for r in range(args.rounds):
            runs["emo train ldm"].append(ours(recipe_for(shape, models, args.device, root, prepared, root / f"ours{r}", batch,
                                                         args.steps, [])))
            runs["plain loop"].append(plain(recipe_for(shape, models, args.device, root, prepared, root / f"plain{r}", batch,
                                                       args.steps, []), args.steps, args.steps // 2,
                                       args.device))
            cached = ["data.cache_latents=true", "data.cache_text=true", f"data.cache_dir={root / 'cache'}"]
            runs["emo train ldm, cached"].append(ours(recipe_for(shape, models, args.device, root, prepared, root / f"cached{r}", batch,
                                                                 args.steps, cached)))
    base = statistics.median(runs["plain loop"])
    print(f"\nshape {shape}, device {args.device}, batch {batch}, {args.steps} steps (last {args.steps // 2} timed), "
          f"{args.rounds} rounds")
    for name, values in runs.items():
        m = statistics.median(values)
        print(f"{name:24s} {m:8.2f} samples/s  x{m / base:.2f} vs plain   ({', '.join(f'{v:.2f}' for v in values)})")
    ours_online, ours_cached = statistics.median(runs["emo train ldm"]), statistics.median(runs["emo train ldm, cached"])
    print(f"cached latents + text vs online (both emo): x{ours_cached / ours_online:.2f}")


if __name__ == "__main__":
    main()
