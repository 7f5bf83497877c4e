"""`emo sample`: emotional images from a trained EmoGen run (or explicit SD + mapper + emotion space), or
prompt-conditioned images from an `emo train ldm` run (the sampler follows the run's method); the plain
Stable Diffusion baseline (`--baseline --sd MODEL`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from emocli.errors import EmoError


def sample(
    emotion: Optional[str] = typer.Option(None, "--emotion", help="EmoGen: an EmoSet emotion, or 'all' for the 8."),
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/<emotion>/<name>.png + .json (EmoGen) or "
                             "OUT/prompts/<name>.png + .json (LDM), and OUT/grid.png."),
    run: Optional[Path] = typer.Option(None, "--run", help="A trained `emo train emogen` or `emo train ldm` run."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="LDM: a prompt (repeatable)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="LDM: a text file (one prompt a line), or a "
                                           "prepared caption folder / its test.jsonl (the test split's captions)."),
    obj: Optional[str] = typer.Option(None, "--object", help="Object word after the emotion token, e.g. cup."),
    fuse: Optional[str] = typer.Option(None, "--fuse", help="A second emotion: two emotion tokens in one prompt."),
    mix: Optional[float] = typer.Option(None, "--mix", min=0.0, max=1.0,
                                        help="With --fuse: one token from the emotion space interpolated this far."),
    n: int = typer.Option(4, "--n", min=1, help="Images per emotion (EmoGen) or per prompt (LDM)."),
    seed: int = typer.Option(0, "--seed"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Default: the run's sample.steps (50)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="unipc (default), dpm++, ddim, ddpm, pndm."),
    sd: Optional[str] = typer.Option(None, "--sd", help="Without --run: Stable Diffusion folder or Hub id."),
    mapper: Optional[Path] = typer.Option(None, "--mapper", help="Without --run: a mapper folder."),
    space: Optional[Path] = typer.Option(None, "--space", help="Emotion space (ours or the official emo_space/)."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="Without --run: e.g. an EmoCLIP text encoder."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16"),
    baseline: bool = typer.Option(False, "--baseline", help="Plain Stable Diffusion (--sd) prompted 'an image of "
                                  "{emotion}' (+ --object): EmoGen Table 1's SD row."),
    allow_foreign_space: bool = typer.Option(False, "--allow-foreign-space", help="Use an emotion space made by "
                                             "another emotion encoder than the mapper's (e.g. the released emo_space/)."),
    unadded_token: bool = typer.Option(False, "--unadded-token", help="Reproduce the released inference: the "
                                       "mapper vector replaces the end-of-text/padding embeddings (docs/emogen.md)."),
):
    """Generate images: `emo sample --run RUN --emotion fear --n 8 --out OUT` (EmoGen) or
    `emo sample --run LDM_RUN --prompt "a red circle" --out OUT` (LDM)."""
    from emocli.emotions import EMOSET

    if run is not None and (run / "final" / "ldm.json").is_file():
        if emotion or obj or fuse or mix is not None:
            raise EmoError(f"{run} is an LDM run: give --prompt/--prompts, not --emotion/--object/--fuse/--mix")
        import torch

        from emocli.methods.ldm.sample import sample_run

        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if dtype != "auto" and dtype not in dtypes:
            raise EmoError(f"unknown --dtype {dtype!r}; valid: auto, fp32, fp16, bf16")
        count = sample_run(run, prompt, prompts, out, n, seed, steps, guidance, scheduler, dev,
                           dtypes.get(dtype, torch.float16 if dev == "cuda" else torch.float32))
        typer.echo(f"{count} images in {out / 'prompts'}; grid: {out / 'grid.png'}")
        return
    if prompt or prompts:
        raise EmoError("--prompt/--prompts need an `emo train ldm` run (--run); EmoGen samples take --emotion")
    if emotion is None:
        raise EmoError("give --emotion EMOTION (EmoGen), or --run LDM_RUN with --prompt (LDM)")

    emotions = list(EMOSET.labels) if emotion.strip().lower() == "all" else [EMOSET.validate(emotion)]
    if fuse is not None:
        EMOSET.validate(fuse)
    if mix is not None and fuse is None:
        raise EmoError("--mix needs --fuse EMOTION (the emotion to interpolate towards)")

    import torch

    from emocli.methods.emogen.sample import make_sampler
    from emocli.samples import SampleWriter

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype != "auto" and dtype not in dtypes:
        raise EmoError(f"unknown --dtype {dtype!r}; valid: auto, fp32, fp16, bf16")
    torch_dtype = dtypes.get(dtype, torch.float16 if dev == "cuda" else torch.float32)
    sampler, defaults = make_sampler(run, sd, mapper, space, text_encoder, baseline, dev, torch_dtype,
                                     allow_foreign_space, unadded_token)
    settings = {"steps": steps or defaults["steps"], "guidance": defaults["guidance"] if guidance is None else guidance,
                "scheduler": scheduler or defaults["scheduler"], "batch_size": defaults.get("batch_size") or 4,
                "height": defaults.get("height"), "width": defaults.get("width")}
    from emocli.progress import step_progress

    with SampleWriter(out) as writer, step_progress(n * len(emotions), "sample", every=max(1, n)) as bar:
        for name in emotions:
            for i, image, params in sampler.generate(name, n=n, seed=seed, obj=obj, fuse=fuse, mix=mix, **settings):
                writer.write(name, f"{name}_{i:04d}", image, params)
                bar.update()
        grid_path = writer.commit()
    typer.echo(f"{n * len(emotions)} images in {out}; grid: {grid_path}")
