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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(args: list[str], port: int, cwd) -> list:
    """Start `emo ARGS` as machine 1 and machine 0 of a 2-machine run on this host (one process each, gloo
    over 127.0.0.1, through accelerate launch); return both finished processes."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = ["--num-processes", "1", "--num-machines", "2", "--main-process-ip", "127.0.0.1",
             "--main-process-port", str(port)]
    procs = [subprocess.Popen([sys.executable, "-m", "emocli", *args, *flags, "--machine-rank", str(rank)],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (1, 0)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out[::-1]  # machine 0 first


@pytest.fixture(scope="module")
def classifier_inputs(emoset_tiny, tmp_path_factory) -> dict:
    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import make_tiny

    root = tmp_path_factory.mktemp("machines")
    return {"clip": make_tiny(root / "models", which=("clip",))["clip"],
            "prepared": prepare_emoset(str(emoset_tiny), root / "prepared"), "root": root}


def test_two_machines_train_one_model_on_disjoint_shards_and_resume(classifier_inputs, tmp_path):
    """Two `emo train` launches on this host as machines 0 and 1 of one DDP run (a shared run folder): the
    ranks see disjoint halves of the data, machine 0 writes the checkpoints, and both resume from them."""
    from tests.conftest import ROOT

    out = tmp_path / "run"
    args = ["train", "emotion-classifier", "tiny/emotion-classifier", f"model.clip={classifier_inputs['clip']}",
            f"data.prepared={classifier_inputs['prepared']}", f"run.output_dir={out}", "train.batch_size=8",
            "train.audit_data=true", "train.log_every=1", "train.checkpoint_every=2", "train.keep_checkpoints=5",
            "--accelerate-config", "multi_cpu"]
    machine0, machine1 = _two_machines([*args, "train.max_steps=4"], _free_port(), ROOT)
    assert machine0.returncode == 0 and machine1.returncode == 0, _why(machine0) + _why(machine1)
    assert "--num_machines 2 --machine_rank 1 --main_process_ip 127.0.0.1" in machine1.stderr

    audit = json.loads((out / "audit_data.json").read_text())
    ranks = [set(r) for r in audit["ranks"]]
    # 4 steps x batch 8 on each rank, no example on both
    assert len(ranks) == 2 and len(ranks[0]) == len(ranks[1]) == 32 and ranks[0].isdisjoint(ranks[1])
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    state = json.loads((list_checkpoints(out)[-1][1] / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 4
    config0 = yaml.safe_load((out / "accelerate_config.yaml").read_text())
    config1 = yaml.safe_load((out / "accelerate_config.machine1.yaml").read_text())
    assert (config0["machine_rank"], config1["machine_rank"]) == (0, 1)
    assert config0["num_machines"] == 2 and config0["num_processes"] == 2
    assert "accelerate: MULTI_CPU, 2 process(es)" in (out / "log.txt").read_text()

    machine0, machine1 = _two_machines([*args, "train.max_steps=6", "--resume"], _free_port(), ROOT)
    assert machine0.returncode == 0 and machine1.returncode == 0, _why(machine0) + _why(machine1)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps[-2:] == [5, 6] and "resumed from" in (out / "log.txt").read_text()
    assert [s for s, _ in list_checkpoints(out)][-1] == 6


def test_machine_flags_are_checked_and_reach_accelerate(tmp_path):
    from emocli.commands.train import load_for_command
    from emocli.errors import EmoError
    from emocli.launch import launch_command

    machines = {"num_machines": 4, "machine_rank": 3, "main_process_ip": "10.0.0.1", "main_process_port": 29500}
    recipe = load_for_command("emotion-classifier", ["tiny/emotion-classifier", "launch.num_processes=8"],
                              machines=machines)
    cmd = " ".join(launch_command(recipe, tmp_path, resume=False))
    assert "--num_processes 32 --main_process_port 29500 --num_machines 4 --machine_rank 3" in cmd
    assert "--main_process_ip 10.0.0.1" in cmd and "accelerate_config.machine3.yaml" in cmd
    with pytest.raises(EmoError, match="machine_rank=2 must be below launch.num_machines=2"):
        load_for_command("emotion-classifier", ["tiny/emotion-classifier"],
                         machines={**machines, "num_machines": 2, "machine_rank": 2})
    with pytest.raises(EmoError, match="needs launch.main_process_ip"):
        load_for_command("emotion-classifier", ["tiny/emotion-classifier"], machines={"num_machines": 2})
    same = load_for_command("emotion-classifier", ["tiny/emotion-classifier", "launch.num_machines=2",
                                                   "launch.main_process_ip=10.0.0.1", "launch.main_process_port=29500"])
    assert same.launch.world_size == 2  # the same keys under launch:
