"""`emo understand grpo [RECIPE] [key=value ...]`, `emo understand predict --image PATH [--run DIR | --model PATH]`
and `emo understand explain --run RUN (--image PATH | --images DIR)`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from emocli.commands.train import (
    ACCELERATE_CONFIG,
    DRY_RUN,
    MACHINE_RANK,
    MAIN_PROCESS_IP,
    MAIN_PROCESS_PORT,
    NUM_MACHINES,
    NUM_PROCESSES,
    RECIPE_ARGS,
    RESUME,
    machine_options,
)

app = typer.Typer(help="Emotion understanding with vision-language models: GRPO training and prediction, "
                       "SEVLM explanations.",
                  no_args_is_help=True)


@app.command("grpo")
def grpo(
    args: Optional[list[str]] = RECIPE_ARGS,
    resume: bool = RESUME,
    num_processes: Optional[int] = NUM_PROCESSES,
    accelerate_config: Optional[str] = ACCELERATE_CONFIG,
    dry_run: bool = DRY_RUN,
    num_machines: Optional[int] = NUM_MACHINES,
    machine_rank: Optional[int] = MACHINE_RANK,
    main_process_ip: Optional[str] = MAIN_PROCESS_IP,
    main_process_port: Optional[int] = MAIN_PROCESS_PORT,
):
    """GRPO fine-tuning of a VLM on binary, multiple-choice and misleading emotion questions (TRL GRPOTrainer).

    Writes RUN/questions/ (the train/val/test questions), RUN/trainer/checkpoint-N, RUN/metrics.jsonl and
    RUN/final/model. Default recipe: grpo (Qwen2.5-VL-3B-Instruct); tiny/grpo runs on CPU.
    """
    from emocli.commands.train import execute, load_for_command
    from emocli.errors import EmoError
    from emocli.methods.grpo.config import check_generation_batch
    from emocli.methods.grpo.train import check_extra, latest_trainer_checkpoint
    from emocli.runs import resolve_output_dir

    recipe = load_for_command("grpo", args or [], num_processes, accelerate_config,
                              machine_options(num_machines, machine_rank, main_process_ip, main_process_port))
    try:
        check_generation_batch(recipe.grpo, recipe.launch.world_size)
    except ValueError as e:
        raise EmoError(str(e)) from None
    if recipe.grpo.extra:
        check_extra(recipe.grpo)  # a typo fails here, before the run directory exists
    if not dry_run and not resume and recipe.launch.machine_rank == 0:
        checkpoint = latest_trainer_checkpoint(resolve_output_dir(recipe))
        if checkpoint is not None:
            raise EmoError(f"run directory {resolve_output_dir(recipe)} already has TRL checkpoints "
                           f"({checkpoint.name}); pass --resume to continue it, or choose another directory "
                           f"with run.output_dir=...")
    execute(recipe, resume=resume, dry_run=dry_run)


@app.command("predict")
def predict(
    image: Path = typer.Option(..., "--image", help="An image file."),
    run: Optional[Path] = typer.Option(None, "--run", help="A `emo understand grpo` run directory."),
    model: Optional[str] = typer.Option(None, "--model", help="Instead of --run: a VLM folder or Hub id."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the question's options and the reply."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed", help="Seeds the order of the lettered options."),
):
    """Print the emotion an image evokes (one of the 8 EmoSet emotions).

    The model answers a multiple-choice question (greedy); when its reply names no emotion, the eight lettered
    answers are ranked by the model's likelihood instead (said with --verbose).
    """
    from emocli.methods.grpo.evaluate import predict as predict_emotion
    from emocli.methods.grpo.questions import LETTERS

    if device not in ("auto", "cpu", "cuda"):
        from emocli.errors import EmoError

        raise EmoError(f"--device must be auto, cpu or cuda, got {device!r}")
    result = predict_emotion(image, run=run, model=model, device=device, max_new_tokens=max_new_tokens, seed=seed)
    typer.echo(result.emotion)
    if verbose:
        options = ", ".join(f"{LETTERS[i]}. {name}" for i, name in enumerate(result.question["options"]))
        typer.echo(f"options: {options}")
        typer.echo(f"reply: {result.text!r}")
        if result.ranked:
            best = ", ".join(f"{LETTERS[i]} {s:.2f}" for i, s in enumerate(result.scores))
            typer.echo(f"the reply names no emotion: options ranked by log-likelihood ({best})")


@app.command("explain")
def explain(
    run: Path = typer.Option(..., "--run", help="An `emo train sevlm` run directory (or a SEVLM model folder)."),
    image: Optional[Path] = typer.Option(None, "--image", help="One image: prints its emotion and explanation."),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images: writes one JSON line each."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSONL file for --images (default: DIR/explanations.jsonl)."),
    weights: str = typer.Option("best", "--weights", help="best (RUN/best/model, else final) or final."),
    sample: bool = typer.Option(False, "--sample", help="Top-p sampling instead of greedy decoding."),
    top_p: float = typer.Option(0.9, "--top-p", min=0.0, max=1.0),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6),
    max_new_tokens: int = typer.Option(25, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
):
    """SEVLM: the emotion an artwork evokes (one of ArtEmis's 9) and why ("<emotion> because <explanation>")."""
    import json

    from emocli.errors import EmoError

    if (image is None) == (images is None):
        raise EmoError("pass exactly one of --image PATH or --images DIR")
    if weights not in ("best", "final"):
        raise EmoError(f"--weights must be best or final, got {weights!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise EmoError(f"--device must be auto, cpu or cuda, got {device!r}")
    if image is not None and not image.is_file():
        raise EmoError(f"--image {image} is not a file")
    if images is not None and not images.is_dir():
        raise EmoError(f"--images {images} is not a folder")
    from emocli.methods.sevlm.evaluate import resolve_model_dir

    model_dir = resolve_model_dir(run, weights)
    import torch

    from emocli.data.emoset import CorruptImage, load_rgb
    from emocli.methods.sevlm.model import SevlmPipeline

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline = SevlmPipeline.from_pretrained(model_dir, device=device)
    decode = dict(max_new_tokens=max_new_tokens, greedy=not sample, temperature=temperature, top_p=top_p,
                  generator=torch.Generator(device=device).manual_seed(seed))
    if image is not None:
        try:
            picture = load_rgb(image)
        except CorruptImage as e:
            raise EmoError(f"--image {e.path}: {e.reason}") from None
        result = pipeline.explain([picture], **decode)[0]
        typer.echo(f"emotion: {result['emotion'] or '(none)'}")
        typer.echo(f"explanation: {result['explanation']}")
        return
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in suffixes)
    if not files:
        raise EmoError(f"--images {images} holds no .jpg/.jpeg/.png/.webp/.bmp files")
    out = out or images / "explanations.jsonl"
    written, bad = 0, []
    with out.open("w", encoding="utf-8") as f:
        for start in range(0, len(files), batch_size):
            batch, paths = [], []
            for path in files[start:start + batch_size]:
                try:
                    batch.append(load_rgb(path))
                    paths.append(path)
                except CorruptImage as e:
                    bad.append(f"{e.path}: {e.reason}")
            if not batch:
                continue
            for path, result in zip(paths, pipeline.explain(batch, **decode)):
                f.write(json.dumps({"image": str(path.relative_to(images)), **result}, ensure_ascii=False) + "\n")
                written += 1
    for line in bad:
        typer.echo(f"skipped bad image {line}", err=True)
    typer.echo(f"{written} explanations -> {out}" + (f" ({len(bad)} unreadable images skipped)" if bad else ""))
