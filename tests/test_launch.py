"""Real 2-process launches on CPU (gloo): DDP and DeepSpeed ZeRO-2, through `emo train`.

Each checks: disjoint and complete data shards, falling loss, one complete checkpoint written per
step by rank 0 (no temp leftovers), and resume from it.
"""

from __future__ import annotations

import json

import pytest
import yaml

from emocli.launch import NAMED_CONFIGS, named_config_path
from emocli.runs import list_checkpoints
from tests.conftest import run_emo


def _why(done) -> str:
    """Every line of a failed launch that names an error or a non-zero rank (the tail hides them)."""
    lines = done.stderr.splitlines()
    keep = [x for x in lines if "Error" in x or "rank1" in x or "error:" in x]
    return "\n".join(keep[-60:]) + "\n---\n" + "\n".join(lines[-20:])


@pytest.mark.parametrize("name", NAMED_CONFIGS)
def test_shipped_accelerate_configs_parse(name):
    config = yaml.safe_load(named_config_path(name).read_text())
    assert config["distributed_type"] in {"NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED"}


@pytest.mark.parametrize("config", ["multi_cpu", "zero2"])
def test_two_process_training(config, emoset_prepared, tmp_path):
    out = tmp_path / config
    common = ["train", "emotion-encoder", "tiny/emotion-encoder", f"data.prepared={emoset_prepared}",
              f"run.output_dir={out}", "data.max_images_per_split=64", "train.batch_size=8",
              "train.audit_data=true", "train.log_every=1", "train.checkpoint_every=4", "train.keep_checkpoints=5",
              "--num-processes", "2", "--accelerate-config", config]
    done = run_emo(*common, "train.max_steps=8")
    assert done.returncode == 0, _why(done)

    # Shards: each rank saw 32 of the 64 training images in the first epoch, disjoint, together all.
    audit = json.loads((out / "audit_data.json").read_text())
    ranks = [set(r) for r in audit["ranks"]]
    assert len(ranks) == 2 and all(len(r) == 32 for r in ranks)
    assert ranks[0].isdisjoint(ranks[1]) and ranks[0] | ranks[1] == set(range(64))

    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])

    ckpts = list_checkpoints(out)
    assert [s for s, _ in ckpts] == [4, 8]
    assert not list((out / "checkpoints").glob(".*"))
    state = json.loads((ckpts[-1][1] / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 8
    assert (ckpts[-1][1] / "model" / "model.safetensors").is_file()
    assert (out / "final" / "emotion_space.safetensors").is_file()
    assert (out / "accelerate_config.yaml").is_file()
    launch = json.loads((out / "command.json").read_text())["launch"]
    assert "accelerate.commands.launch" in launch and "emocli.worker" in launch
    assert not (out / "recipe.previous.yaml").exists()
    log = (out / "log.txt").read_text()
    assert log.count("checkpoint:") == 2  # rank 0 alone logs and writes
    expected = {"multi_cpu": "MULTI_CPU", "zero2": "DEEPSPEED"}[config]
    assert f"accelerate: {expected}, 2 process(es)" in log

    resumed = run_emo(*common, "train.max_steps=12", "--resume")
    assert resumed.returncode == 0, _why(resumed)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 13))
    assert "resumed from" in (out / "log.txt").read_text()
    assert [s for s, _ in list_checkpoints(out)][-1] == 12
