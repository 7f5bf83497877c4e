"""Prompt-conditioned generation from an `emo train ldm` run: its final/model is a plain diffusers
StableDiffusionPipeline folder, and sampling is that pipeline's own call (so the result equals
`StableDiffusionPipeline.from_pretrained(RUN/final/model)` with the same scheduler and seeds).

Image j of a call (prompts in order, `n` images each: j = prompt_index * n + k) starts from the
latent drawn by a generator seeded with seed + j: reproducible on its own, whatever the batching.
Guidance is classifier-free against the encoded empty prompt "" (the caption-dropout embedding).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from emocli.errors import EmoError

RUN_CONFIG = "ldm.json"


def is_ldm_run(run_dir: Path) -> bool:
    return (Path(run_dir) / "final" / RUN_CONFIG).is_file()


def load_pipeline(run_dir: Path, device: str = "cpu", dtype=torch.float32):
    from diffusers import StableDiffusionPipeline

    from emocli.hub import quiet_loading

    folder = Path(run_dir) / "final" / "model"
    if not (folder / "model_index.json").is_file():
        raise EmoError(f"{run_dir} is not a finished LDM run (no final/model/model_index.json)")
    quiet_loading()
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def read_prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[dict]:
    """[{"prompt", "reference_id" (or None), "stem"}]: --prompt values, then the lines of a text file, or the
    test split of a prepared caption folder (its test.jsonl or the folder itself; first caption per image)."""
    items = [{"prompt": p, "reference_id": None} for p in (prompts or [])]
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.exists():
            raise EmoError(f"--prompts {path} does not exist (give a text file with one prompt a line, or a "
                           f"prepared caption folder / its test.jsonl)")
        if path.is_dir() or path.suffix == ".jsonl":
            from emocli.data.captions import PreparedCaptions

            prepared = PreparedCaptions(path if path.is_dir() else path.parent)
            records = prepared.records(path.stem if path.suffix == ".jsonl" else "test")
            items += [{"prompt": r["captions"][0], "reference_id": r["id"]} for r in records]
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            items += [{"prompt": line, "reference_id": None} for line in lines if line]
    if not items:
        raise EmoError("no prompts: give --prompt TEXT (repeatable) or --prompts FILE")
    for i, item in enumerate(items):
        ref = item["reference_id"]
        item["stem"] = re.sub(r"[^A-Za-z0-9._-]+", "_", ref).strip("._")[:120] if ref else f"{i:05d}"
    return items


def generate(pipe, items: list[dict], n: int = 1, seed: int = 0, steps: int = 130, guidance: float = 8.0,
             scheduler: str = "dpm++", batch_size: int = 32, source: dict | None = None):
    """Yield (name, PIL image, params) for every prompt x n images, in batches of `batch_size` images."""
    from emocli.methods.emogen.sample import set_scheduler

    set_scheduler(pipe, scheduler)
    jobs = [(item, k, i * n + k) for i, item in enumerate(items) for k in range(n)]
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first: first + batch_size]
        generators = [torch.Generator(pipe.device).manual_seed(seed + j) for _, _, j in chunk]
        images = pipe([item["prompt"] for item, _, _ in chunk], num_inference_steps=steps, guidance_scale=guidance,
                      generator=generators).images
        for (item, k, j), image in zip(chunk, images):
            params = {"method": "ldm", "prompt": item["prompt"], "reference_id": item["reference_id"], "seed": seed,
                      "index": k, "latent_seed": seed + j, "steps": steps, "guidance": guidance,
                      "scheduler": scheduler, "height": image.height, "width": image.width, **(source or {})}
            yield f"{item['stem']}_{k:02d}", image, params


def sample_run(run: Path, prompts: list[str] | None, prompts_file: Path | None, out: Path, n: int, seed: int,
               steps: int | None, guidance: float | None, scheduler: str | None, device: str, dtype) -> int:
    """`emo sample --run LDM_RUN --prompt ... --out OUT`: writes OUT/prompts/ and OUT/grid.png; returns the count."""
    from emocli.progress import step_progress
    from emocli.samples import SampleWriter, write_prompt_grid, write_prompt_sample

    items = read_prompts(prompts, prompts_file)  # bad prompt input fails before any model loads
    defaults = json.loads((Path(run) / "final" / RUN_CONFIG).read_text()).get("sample", {})
    pipe = load_pipeline(run, device, dtype)
    settings = {"steps": steps or defaults.get("steps", 130),
                "guidance": defaults.get("guidance", 8.0) if guidance is None else guidance,
                "scheduler": scheduler or defaults.get("scheduler", "dpm++"),
                "batch_size": defaults.get("batch_size", 32)}
    total = len(items) * n
    every = max(1, min(total, settings["batch_size"]))
    with SampleWriter(out) as writer, step_progress(total, "sample", every=every) as bar:
        for name, image, params in generate(pipe, items, n=n, seed=seed, source={"run": str(Path(run).resolve())},
                                            **settings):
            write_prompt_sample(writer, name, image, params)
            bar.update()
        writer.commit(write_prompt_grid)
    return total
