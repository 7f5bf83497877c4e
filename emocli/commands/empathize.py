"""`emo empathize`: an EmpathDiffuser run answers a speaker (utterance + face) with a reply and a listener face."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from emocli.errors import EmoError


def _check_face(path: Path, where: str) -> str:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise EmoError(f"{where}: face {path} does not exist")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise EmoError(f"{where}: face {path} is not a readable image ({str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    return str(path.resolve())


def _read_batch(path: Path) -> list[dict]:
    """A JSON list or JSONL of {"utterance": ..., "face": ...}; relative faces are relative to the file."""
    if not path.is_file():
        raise EmoError(f"--batch {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise EmoError(f"--batch {path} is not JSON or JSONL: {e}") from None
    items = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("utterance"), str) or not row.get("face"):
            raise EmoError(f"--batch {path} item {i} needs the fields utterance (text) and face (an image path)")
        face = Path(row["face"]).expanduser()
        face = face if face.is_absolute() else path.parent / face
        items.append({"utterance": row["utterance"], "face": _check_face(face, f"--batch item {i}"),
                      "name": str(row.get("name") or f"{i:04d}")})
    if not items:
        raise EmoError(f"--batch {path} holds no items")
    return items


def empathize(
    run: Path = typer.Option(..., "--run", help="An `emo train empathdiffuser` run directory."),
    utterance: Optional[str] = typer.Option(None, "--utterance", help="What the speaker says."),
    face: Optional[Path] = typer.Option(None, "--face", help="The speaker's face (an image file)."),
    batch: Optional[Path] = typer.Option(None, "--batch", help='JSON list or JSONL of {"utterance", "face"[, "name"]}.'),
    n: int = typer.Option(1, "--n", min=1, help="Responses per input (seeds S, S+1, ...)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("empathize"), "--out", help="Output folder: NAME.png (listener face) + NAME.json."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="DPM-Solver++ steps (default: the run's, 50)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0,
                                             help="diffusers' scale g = UniDiffuser's s + 1 (default: the run's, 8)."),
    decoding: Optional[str] = typer.Option(None, "--decoding", help="Reply decoding: beam (5 beams) or greedy."),
    weights: str = typer.Option("final", "--weights", help="final, or best (RUN/best: the best validation weights)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
):
    """Reply text, listener face and the speaker's emotion (7 classes, probabilities) for an utterance + face."""
    if batch is not None and (utterance is not None or face is not None):
        raise EmoError("give either --batch FILE or --utterance and --face, not both")
    if batch is None:
        if utterance is None or face is None:
            raise EmoError("give --utterance TEXT and --face IMAGE (or --batch FILE)")
        items = [{"utterance": utterance, "face": _check_face(face.expanduser(), "--face"), "name": "0000"}]
    else:
        items = _read_batch(batch)
    if decoding is not None and decoding not in ("beam", "greedy"):
        raise EmoError(f"unknown --decoding {decoding!r}; valid: beam, greedy")
    if weights not in ("final", "best"):
        raise EmoError(f"unknown --weights {weights!r}; valid: final, best")

    import torch

    from emocli.methods.empathdiffuser.sample import EmpathSampler

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    sampler = EmpathSampler.from_run(run, weights, dev)
    d = sampler.defaults
    settings = {"steps": steps or d.get("steps", 50), "guidance": d.get("guidance", 8.0) if guidance is None else guidance,
                "decoding": decoding or d.get("decoding", "beam"), "max_tokens": d.get("max_reply_tokens", 67)}
    out.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        results = sampler.empathize([i["utterance"] for i in items], [i["face"] for i in items], seed=seed + k, **settings)
        for item, result in zip(items, results):
            name = item["name"] if n == 1 else f"{item['name']}_{k}"
            result["face"].save(out / f"{name}.png")
            sidecar = {
                "utterance": item["utterance"], "speaker_face": item["face"], "reply": result["reply"],
                "listener_face": str((out / f"{name}.png").resolve()), "emotion": result["emotion"],
                "probabilities": result["probabilities"], "seed": seed + k, "steps": settings["steps"],
                "guidance": settings["guidance"],
                "guidance_convention": "diffusers: g*eps(speaker) + (1-g)*eps(null); g = UniDiffuser's s + 1",
                "sampler": "DPM-Solver++ (diffusers DPMSolverMultistepScheduler, algorithm dpmsolver++)",
                "decoding": settings["decoding"], "run": str(Path(run).resolve()), "weights": weights,
            }
            (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
            top = result["probabilities"][result["emotion"]]
            typer.echo(f"{name}: reply: {result['reply']!r} | speaker emotion: {result['emotion']} ({top:.2f}) | "
                       f"listener face: {out / f'{name}.png'}")
