"""`emo quickstart`: the whole EmoGen pipeline on tiny models and synthetic data, on CPU.

synthetic EmoSet -> prepare -> emotion encoder -> alpha from the encoder -> EmoGen -> samples for
every emotion. Each step is the same code the real commands run, driven by the tiny recipes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def quickstart(
    out: Path = typer.Option(Path("quickstart"), "--out", help="Folder for everything the pipeline writes."),
    n: int = typer.Option(256, "--n", min=64, help="Synthetic EmoSet size."),
    seed: int = typer.Option(0, "--seed"),
    samples_per_emotion: int = typer.Option(4, "--samples", min=1, help="Images per emotion at the end."),
    emogen_steps: int = typer.Option(60, "--emogen-steps", min=1, help="EmoGen training steps."),
):
    """Run synthetic EmoSet -> prepare -> emotion encoder -> alpha -> EmoGen -> samples -> eval (tiny, CPU)."""
    from rich.console import Console

    from emocli.errors import EmoError

    console = Console(stderr=True)
    out = out.resolve()
    if (out / "summary.json").exists():
        raise EmoError(f"{out} already holds a quickstart (summary.json); choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str):
        console.rule(f"[bold]{name}")
        return time.perf_counter()

    from emocli.commands.train import execute
    from emocli.data.alpha import compute_alpha
    from emocli.data.prepare import prepare_emoset
    from emocli.data.synth import synth_emoset
    from emocli.recipes.load import load_recipe
    from emocli.testing.tiny import make_tiny

    t = step("1/7 synthetic EmoSet")
    data = synth_emoset(out / "data" / "emoset", n=n, seed=seed)
    models = make_tiny(out / "models", seed=seed, which=("sd", "clip"))
    timings["synth"] = time.perf_counter() - t

    t = step("2/7 emo data prepare emoset")
    prepared = prepare_emoset(str(data), out / "data" / "prepared", seed=seed)
    timings["prepare"] = time.perf_counter() - t

    t = step("3/7 emo train emotion-encoder (tiny)")
    encoder_dir = out / "runs" / "emotion-encoder"
    execute(load_recipe("tiny/emotion-encoder", [f"data.prepared={prepared}", f"run.output_dir={encoder_dir}",
                                                 f"run.seed={seed}"]))
    timings["emotion_encoder"] = time.perf_counter() - t

    t = step("4/7 emo data alpha (from the encoder)")
    compute_alpha(prepared, classifier=str(encoder_dir), scoring="in-sample")  # the encoder trained on them
    timings["alpha"] = time.perf_counter() - t

    t = step("5/7 emo train emogen (tiny)")
    emogen_dir = out / "runs" / "emogen"
    execute(load_recipe("tiny/emogen", [
        f"model.pretrained={models['sd']}", f"model.clip={models['clip']}", f"model.emotion_encoder={encoder_dir}",
        f"data.prepared={prepared}", f"run.output_dir={emogen_dir}", f"run.seed={seed}",
        f"train.max_steps={emogen_steps}",
    ]))
    timings["emogen"] = time.perf_counter() - t

    t = step("6/7 emo sample --emotion all")
    from emocli.commands.sample import sample

    samples = out / "samples"
    sample(emotion="all", out=samples, run=emogen_dir, prompt=None, prompts=None, obj=None, fuse=None, mix=None,
           n=samples_per_emotion, seed=seed, steps=None, guidance=None, scheduler=None, sd=None, mapper=None, space=None,
           text_encoder=None, device="cpu", dtype="fp32", baseline=False, allow_foreign_space=False,
           unadded_token=False)
    timings["sample"] = time.perf_counter() - t

    t = step("7/7 emo eval generation (tiny random backbones: the numbers mean nothing)")
    from emocli.evaluation.tiny import make_tiny_metric_weights

    weights = make_tiny_metric_weights(out / "models" / "metrics", seed=seed)
    eval_dir = out / "runs" / "eval"
    execute(load_recipe("tiny/eval-generation", [
        f"data.samples={samples}", f"data.prepared={prepared}", f"run.output_dir={eval_dir}",
        f"models.clip={models['clip']}", *(f"models.{key}={path}" for key, path in weights.items()),
    ]))
    timings["eval"] = time.perf_counter() - t

    summary = {
        "data": str(data), "prepared": str(Path(prepared).resolve()), "models": {k: str(v) for k, v in models.items()},
        "emotion_encoder": str(encoder_dir), "emogen": str(emogen_dir), "samples": str(samples),
        "grid": str(samples / "grid.png"), "eval": str(eval_dir), "report": str(eval_dir / "report.html"),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.rule("[bold green]done")
    typer.echo(f"quickstart finished in {summary['total_seconds']} s")
    typer.echo(f"  samples grid : {summary['grid']}")
    typer.echo(f"  EmoGen run   : {emogen_dir}   (emo sample --run {emogen_dir} --emotion fear --object cup --out ...)")
    typer.echo(f"  eval report  : {eval_dir / 'report.html'}  (metrics.json, report.md)")
    typer.echo(f"  summary      : {out / 'summary.json'}")
