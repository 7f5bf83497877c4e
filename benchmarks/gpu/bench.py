"""The GPU benchmark's items, one per process (run.sh gives each its own time budget).

    python -m benchmarks.gpu.bench ITEM --out results.jsonl [--tiny]
    python -m benchmarks.gpu.bench report results.jsonl --dest DIR     # gpu-<date>.json + .md

Every measurement is appended to `--out` as one JSON line the moment it is taken, so an item killed at
its budget keeps what it had finished. Models are built from configs at the real architectures with
random weights (speed does not depend on the weights); `--tiny` swaps in the tiny models of
`emocli.testing.tiny` on the CPU, with fewer steps: the dry run the tests make.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Dense bf16/fp16 tensor-core peak (NVIDIA's data sheets, without sparsity): the MFU denominator.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


class Context:
    def __init__(self, item: str, out: Path, tiny: bool):
        import torch

        self.item, self.out, self.tiny = item, out, tiny
        self.device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
        self.cuda = self.device.type == "cuda"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"emo-gpu-{item}-"))

    def emit(self, name: str, **fields) -> None:
        """One measurement, appended and flushed at once."""
        row = {"item": self.item, "name": name, "device": str(self.device), "tiny": self.tiny, **fields}
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(json.dumps(row), flush=True)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            self.sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        """Peak allocated CUDA memory since the last reset_peak (None on CPU: no per-phase peak there)."""
        if not self.cuda:
            return None
        import torch

        self.sync()
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def seconds(self, fn, reps: int, warmup: int = 1) -> float:
        """Median wall seconds of `fn()` over `reps` calls after `warmup` untimed ones."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def peak_tflops(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        name = torch.cuda.get_device_name()
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` as torch.utils.flop_counter counts them: matmuls, convolutions and attention
    (2 per multiply-add), forward and backward; elementwise work and normalisation are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------------
# 1. EmoGen training step at SD 1.5's shape
# ---------------------------------------------------------------------------------------------------
def item_emogen_train(ctx: Context) -> None:
    """`emo`'s step vs the original-style step (benchmarks/emogen_train.py), with and without UNet gradient
    checkpointing; SD 1.5's UNet/VAE/CLIP-L text shapes, 512 px, bf16, batch 8."""
    import torch

    from benchmarks.emogen_train import components, make_batch, original_step, ours_step
    from emocli.methods.emogen.injection import add_placeholders, tokenize
    from emocli.methods.emogen.mapper import Mapper

    torch.manual_seed(0)
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    batch, reps = (8, 3) if not ctx.tiny else (4, 1)
    parts = components(not ctx.tiny, ctx.device, dtype)
    tok = parts["tokenizer"]
    pid = add_placeholders(tok, ["<emotion>"])[0]
    parts["text_encoder"].resize_token_embeddings(len(tok))
    parts["text_encoder"].requires_grad_(False)
    ids = tokenize(tok, ["<emotion>"], ctx.device)
    mapper = Mapper(768, parts["text_encoder"].get_input_embeddings().embedding_dim).to(ctx.device)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-3)
    latents, vectors = make_batch(parts, batch, ctx.device, dtype, 32 if ctx.tiny else 512)
    unet_params = sum(p.numel() for p in parts["unet"].parameters())
    steps = {"emo": ours_step, "original": original_step}
    flops = count_flops(lambda: ours_step(parts, mapper, optimizer, pid, ids, latents, vectors))
    peak = ctx.peak_tflops()
    for checkpointing in (False, True):
        if checkpointing:
            parts["unet"].enable_gradient_checkpointing()
        for name, fn in steps.items():
            ctx.reset_peak()
            s = ctx.seconds(lambda fn=fn: fn(parts, mapper, optimizer, pid, ids, latents, vectors), reps)
            mfu = flops / s / (peak * 1e12) if peak and name == "emo" else None
            ctx.emit(f"{name} step{', UNet checkpointing' if checkpointing else ''}", samples_per_s=round(batch / s, 3),
                     step_s=round(s, 4), peak_gib=ctx.peak_gib(), batch=batch, dtype=str(dtype).split(".")[-1],
                     unet_params=unet_params, model_tflop_per_step=round(flops / 1e12, 3),
                     mfu=None if mfu is None else round(mfu, 4),
                     flops_counted="torch.utils.flop_counter over one emo step without checkpointing "
                                   "(matmul/conv/attention, forward+backward; recomputation not counted)")


# ---------------------------------------------------------------------------------------------------
# 2. `emo sample` vs StableDiffusionPipeline
# ---------------------------------------------------------------------------------------------------
def item_sample(ctx: Context) -> None:
    """Seconds per image of EmoGenSampler (what `emo sample` runs) and of plain StableDiffusionPipeline on the
    same components, 512 px, 50 UniPC steps, fp16, SDPA, batch 1 and 8; then both with the UNet compiled."""
    import torch
    from diffusers import StableDiffusionPipeline

    from benchmarks.emogen_train import components
    from emocli.emotion_space import EmotionSpace
    from emocli.methods.emogen.mapper import Mapper
    from emocli.methods.emogen.sample import EmoGenSampler, set_scheduler

    torch.manual_seed(0)
    dtype = torch.float16 if ctx.cuda else torch.float32
    steps, batches = (50, (1, 8)) if not ctx.tiny else (2, (1, 2))
    parts = components(not ctx.tiny, ctx.device, dtype)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    hidden = pipe.text_encoder.get_input_embeddings().embedding_dim
    # A random space and mapper: speed does not depend on them (the encoder-match check is waived for that).
    sampler = EmoGenSampler(pipe, Mapper(768, hidden).to(ctx.device),
                            EmotionSpace(torch.randn(8, 768), torch.rand(8, 768)), allow_foreign_space=True)
    attention = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})

    def ours(n):
        list(sampler.generate("fear", n=n, seed=0, steps=steps, guidance=7.5, batch_size=n))

    def plain(n):
        set_scheduler(pipe, "unipc")
        pipe(["a photo"] * n, num_inference_steps=steps, guidance_scale=7.5,
             generator=[torch.Generator(ctx.device).manual_seed(i) for i in range(n)])

    runs = {"emo sample": ours, "StableDiffusionPipeline": plain}

    def measure(tag: str):
        for n in batches:
            for name, fn in runs.items():
                ctx.reset_peak()
                s = ctx.seconds(lambda fn=fn, n=n: fn(n), reps=1)  # 50 steps: one timed call after a warm-up
                ctx.emit(f"{name}, batch {n}{tag}", s_per_image=round(s / n, 4), batch=n, steps=steps,
                         dtype=str(dtype).split(".")[-1], attention=attention, peak_gib=ctx.peak_gib())

    measure("")
    # torch.compile of the UNet: the first call pays the compile; it is timed apart. On the tiny CPU run the
    # graph capture is exercised with the eager backend (inductor's C++ build would dominate there).
    pipe.unet = torch.compile(pipe.unet, backend="inductor" if ctx.cuda else "eager")
    t = time.perf_counter()
    ours(batches[0])
    ctx.sync()
    first = time.perf_counter() - t
    steady = ctx.seconds(lambda: ours(batches[0]), reps=1, warmup=0)
    ctx.emit("torch.compile of the UNet", compile_s=round(first - steady, 2), first_call_s=round(first, 2),
             backend="inductor" if ctx.cuda else "eager")
    measure(", UNet compiled")


# ---------------------------------------------------------------------------------------------------
# 3. LDM at seed 004's shape
# ---------------------------------------------------------------------------------------------------
def lpips_files(root: Path) -> tuple[Path, Path]:
    """AlexNet backbone + LPIPS heads at their real widths, random weights, in the released files' layouts."""
    import torch
    from safetensors.torch import save_file

    from emocli.metrics.lpips import LPIPS

    torch.manual_seed(0)
    metric = LPIPS()
    backbone, heads = root / "alexnet.safetensors", root / "alex.safetensors"
    save_file({k: v.contiguous() for k, v in metric.net.state_dict().items()}, str(backbone))
    save_file({f"lin{k}.model.1.weight": torch.rand_like(h.model[1].weight) for k, h in enumerate(metric.heads)},
              str(heads))
    return backbone, heads


def item_ldm_train(ctx: Context) -> None:
    """`emo train ldm`'s step (LdmTask.loss + backward + AdamW, as `fit` runs it) at recipes/ldm.yaml's UNet,
    SD's VAE and CLIP-B/32 text shapes, 256 px, bf16, batch 64; LPIPS phase off, then on."""
    import torch
    from accelerate import Accelerator

    from benchmarks.ldm_train import build_models, recipe_for
    from emocli.data.captions import prepare_captions, synth_captions
    from emocli.methods.ldm.train import LdmTask
    from emocli.runs import prepare_run

    torch.manual_seed(0)
    shape, batch = ("tiny", 4) if ctx.tiny else ("seed", 64)
    root = ctx.tmp
    models = build_models(shape, root / "models" if shape == "tiny" else root)
    prepared = prepare_captions(synth_captions(root / "src", n=batch, size=max(64, models["resolution"])),
                                root / "prepared", test_fraction=0.0)
    backbone, heads = lpips_files(root)
    device = "cuda" if ctx.cuda else "cpu"
    recipe = recipe_for(shape, models, device, root, prepared, root / "run", batch, 10, [
        "loss.lpips_weight=0.1", "loss.lpips_from_epoch=1", f"loss.lpips_backbone={backbone}",
        f"loss.lpips_heads={heads}"])
    task = LdmTask(recipe, prepare_run(recipe, ["benchmark"]))
    acc = Accelerator(mixed_precision=recipe.launch.mixed_precision, cpu=not ctx.cuda)
    task.setup(acc)
    model, optimizer = acc.prepare(task.model, torch.optim.AdamW(task.model.parameters(), lr=recipe.optim.lr))
    items = torch.utils.data.default_collate([task.train_dataset[i] for i in range(batch)])
    params = sum(p.numel() for p in task.model.parameters())

    def step():
        loss, _ = task.loss(model, items)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), recipe.train.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for epoch, phase in ((0, "LPIPS off"), (1, "LPIPS on")):
        task.epoch = epoch  # the LPIPS term switches on at loss.lpips_from_epoch, as in a run
        assert task.aux_active()[0] == (epoch == 1)
        ctx.reset_peak()
        s = ctx.seconds(step, reps=3 if not ctx.tiny else 1)
        ctx.emit(f"emo train ldm step, {phase}", images_per_s=round(batch / s, 2), step_s=round(s, 4),
                 peak_gib=ctx.peak_gib(), batch=batch, resolution=models["resolution"], unet_params=params,
                 mixed_precision=recipe.launch.mixed_precision,
                 gradient_checkpointing=recipe.model.gradient_checkpointing)


# ---------------------------------------------------------------------------------------------------
# 6. One-GPU DeepSpeed ZeRO-2 run of the emotion encoder
# ---------------------------------------------------------------------------------------------------
RESNET50 = ("model.backbone.config={num_channels: 3, embedding_size: 64, hidden_sizes: [256, 512, 1024, 2048], "
            "depths: [3, 4, 6, 3], layer_type: bottleneck}")


def emo(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "emocli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def item_zero2(ctx: Context) -> None:
    """`emo train emotion-encoder --accelerate-config zero2` on one process: starts, trains, checkpoints,
    resumes. recipes/emotion-encoder.yaml with a random ResNet-50 on synthetic EmoSet at 224 px."""
    from emocli.data.prepare import prepare_emoset
    from emocli.data.synth import synth_emoset
    from emocli.runs import list_checkpoints

    n = 64 if ctx.tiny else 512
    prepared = prepare_emoset(str(synth_emoset(ctx.tmp / "emoset", n=n, seed=0)), ctx.tmp / "prepared")
    out = ctx.tmp / "run"
    recipe = (["tiny/emotion-encoder"] if ctx.tiny else
              ["emotion-encoder", "model.backbone.pretrained=null", RESNET50, "train.num_workers=4"])
    steps = 4 if ctx.tiny else 20
    common = ["train", "emotion-encoder", *recipe, f"data.prepared={prepared}", f"run.output_dir={out}",
              "train.batch_size=8" if ctx.tiny else "train.batch_size=64", "train.log_every=1",
              f"train.checkpoint_every={steps}", "train.eval_every=100000", "optim.warmup_steps=0",
              "train.trackers=[]", "--num-processes", "1", "--accelerate-config", "zero2"]
    for phase, extra in (("start", [f"train.max_steps={steps}"]), ("resume", [f"train.max_steps={2 * steps}",
                                                                            "--resume"])):
        t = time.perf_counter()
        done = emo(*common, *extra)
        wall = time.perf_counter() - t
        log = (out / "log.txt").read_text() if (out / "log.txt").is_file() else ""
        rates = [json.loads(x).get("steps_per_s") for x in (out / "metrics.jsonl").read_text().splitlines()
                 if "steps_per_s" in x] if (out / "metrics.jsonl").is_file() else []
        ckpts = [s for s, _ in list_checkpoints(out)] if out.is_dir() else []
        ok = (done.returncode == 0 and "DEEPSPEED" in log and ckpts and ckpts[-1] == steps * (1 + (phase == "resume"))
              and (phase == "start" or "resumed from" in log))
        ctx.emit(f"zero2 {phase}", ok=bool(ok), returncode=done.returncode, wall_s=round(wall, 1), checkpoints=ckpts,
                 steps_per_s=rates[-1] if rates else None, error=None if ok else done.stderr.strip()[-600:])
        if not ok:
            raise SystemExit(1)


# ---------------------------------------------------------------------------------------------------
# environment, report
# ---------------------------------------------------------------------------------------------------
def item_env(ctx: Context) -> None:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "transformers", "accelerate", "peft", "diffusers", "trl", "datasets", "deepspeed",
                 "pydantic", "pyarrow", "typer"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    ctx.emit("environment", gpu=torch.cuda.get_device_name() if ctx.cuda else None,
             gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if ctx.cuda else None,
             python=sys.version.split()[0], versions=versions, peak_tflops=ctx.peak_tflops())


ITEMS = {"env": item_env, "emogen_train": item_emogen_train, "sample": item_sample, "ldm_train": item_ldm_train,
         "zero2": item_zero2}


def report(results: Path, dest: Path) -> tuple[Path, Path]:
    """gpu-<date>.json (every row) and gpu-<date>.md (a table per item) in `dest`."""
    rows = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines() if x.strip()]
    date = time.strftime("%Y-%m-%d", time.gmtime())
    dest.mkdir(parents=True, exist_ok=True)
    js, md = dest / f"gpu-{date}.json", dest / f"gpu-{date}.md"
    js.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    lines = [f"# GPU benchmark, {date}", ""]
    for item in dict.fromkeys(r["item"] for r in rows):
        lines += [f"## {item}", "", "| measurement | figures |", "| --- | --- |"]
        for r in rows:
            if r["item"] == item:
                figures = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("item", "name", "device", "tiny")
                                    and v is not None and k != "flops_counted")
                lines.append(f"| {r.get('name', r.get('status'))} | {figures} |")
        lines.append("")
    md.write_text("\n".join(lines), encoding="utf-8")
    return js, md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("item", choices=[*ITEMS, "report"])
    p.add_argument("results", nargs="?", type=Path, help="report: the results.jsonl to summarise")
    p.add_argument("--out", type=Path, help="results.jsonl to append to")
    p.add_argument("--dest", type=Path, help="report: folder for gpu-<date>.json/.md")
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU (the dry run)")
    args = p.parse_args(argv)
    if args.item == "report":
        if args.results is None or not args.results.is_file():
            p.error(f"report needs an existing results file, got {args.results}")
        for path in report(args.results, args.dest or args.results.parent):
            print(path)
        return 0
    if args.out is None:
        p.error("--out is required")
    ITEMS[args.item](Context(args.item, args.out, args.tiny))
    return 0


if __name__ == "__main__":
    sys.exit(main())
