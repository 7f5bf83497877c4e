"""The shared loop's hooks, on a toy task: step/epoch seen by the loss, best weights, early stopping, EMA warm-up."""

from __future__ import annotations

import json

import pytest
import torch

from emocli.recipes.schema import TrainRecipe
from emocli.runs import Run
from emocli.training import TrainTask, _Ema, fit, make_accelerator


class _Toy(TrainTask):
    """Linear regression y = 2x; `scores` scripts what evaluate() reports, one value per call."""

    def __init__(self, scores=None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        x = torch.linspace(-1, 1, 16).unsqueeze(1)
        self.train_dataset = torch.utils.data.TensorDataset(x, 2 * x)
        self.seen: list[tuple[int, int]] = []
        self.scores = list(scores or [])

    def loss(self, model, batch):
        self.seen.append((self.step, self.epoch))
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def evaluate(self, model, accelerator, step):
        return {"score": self.scores.pop(0)} if self.scores else {"score": 0.0}

    def save_pretrained(self, model, directory, state_dict=None):
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in (state_dict or model.state_dict()).items()},
                  str(directory / "model.safetensors"))


def _run(tmp_path, **train):
    recipe = TrainRecipe(method="toy", train={"batch_size": 4, "log_every": 1, "trackers": [], **train},
                         optim={"lr": 0.1})
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    return Run(dir=run_dir, recipe=recipe)


def test_loss_sees_step_and_epoch(tmp_path):
    task = _Toy()
    run = _run(tmp_path, epochs=2, clip_grad_norm=None)
    fit(task, run, make_accelerator(run))
    # 16 samples / batch 4 = 4 steps per epoch: the loss saw steps 0..7 and epochs 0 then 1.
    assert task.seen == [(s, s // 4) for s in range(8)]


def test_best_weights_exported_and_early_stopping(tmp_path):
    # Evaluations at steps 1, 2, 3, ...: the score peaks at step 2, then two evaluations without
    # improvement stop the run at step 4 (patience 2), long before max_steps.
    task = _Toy(scores=[0.1, 0.5, 0.4, 0.3, 0.9, 0.9])
    run = _run(tmp_path, max_steps=20, eval_every=1, best_metric="score", early_stopping_patience=2)
    result = fit(task, run, make_accelerator(run))
    assert result.step == 4
    best = json.loads((run.dir / "best" / "best.json").read_text())
    assert best["step"] == 2 and best["value"] == pytest.approx(0.5) and best["metric"] == "score"
    assert (run.dir / "best" / "model" / "model.safetensors").is_file()
    assert not (run.dir / ".best.tmp").exists()


def test_best_metric_missing_from_evaluation_is_an_error(tmp_path):
    from emocli.errors import EmoError

    run = _run(tmp_path, max_steps=2, eval_every=1, best_metric="accuracy")
    with pytest.raises(EmoError, match="'accuracy' is not among"):
        fit(_Toy(), run, make_accelerator(run))


def test_patience_without_metric_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="best_metric"):
        TrainRecipe(method="toy", train={"early_stopping_patience": 3})


def test_ema_warmup_decay():
    ema = _Ema(torch.nn.Linear(1, 1), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.decay_at(90) == pytest.approx(91 / 100)
    assert ema.decay_at(10**6) == pytest.approx(0.999)
    assert _Ema(torch.nn.Linear(1, 1), decay=0.9).decay_at(0) == pytest.approx(0.9)
    # Named by its formula: diffusers calls (1 + t) / (10 + t) its non-warm-up decay.
    from emocli.recipes.schema import EmaSection

    assert "(1 + t) / (10 + t)" in EmaSection.model_fields["warmup"].description
    assert "use_ema_warmup=False" in EmaSection.model_fields["warmup"].description


class _Recorder(_Toy):
    """Keeps a copy of the weights every evaluation saw."""

    def __init__(self, scores=None):
        super().__init__(scores)
        self.evaluated: dict[int, dict] = {}

    def evaluate(self, model, accelerator, step):
        self.evaluated[step] = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        return super().evaluate(model, accelerator, step)


def test_scored_weights_are_the_exported_weights(tmp_path):
    from safetensors.torch import load_file

    # A slow EMA (decay 0.99, no warm-up) lags far behind the raw weights: scoring the raw weights and
    # exporting the shadow would make best/ and final/ hold weights no evaluation ever saw.
    train = dict(max_steps=4, eval_every=1, best_metric="score", checkpoint_every=4, ema={"decay": 0.99})
    task = _Recorder(scores=[0.1, 0.9, 0.2, 0.3])
    run = _run(tmp_path / "ema", **train)
    fit(task, run, make_accelerator(run))
    best = load_file(str(run.dir / "best" / "model" / "model.safetensors"))
    final = load_file(str(run.dir / "final" / "model" / "model.safetensors"))
    assert json.loads((run.dir / "best" / "best.json").read_text())["step"] == 2
    for key in best:
        assert torch.equal(best[key], task.evaluated[2][key])
        assert torch.equal(final[key], task.evaluated[4][key])
    raw = load_file(str(run.dir / "checkpoints" / "step-4" / "model" / "model.safetensors"))
    assert not torch.equal(raw["weight"], final["weight"])  # the shadow really lags

    # Training went on from the raw weights: the same run without evaluations ends on the same raw weights.
    plain = _run(tmp_path / "plain", max_steps=4, checkpoint_every=4, ema={"decay": 0.99})
    fit(_Toy(), plain, make_accelerator(plain))
    plain_raw = load_file(str(plain.dir / "checkpoints" / "step-4" / "model" / "model.safetensors"))
    for key in raw:
        assert torch.equal(raw[key], plain_raw[key])


class _Backbone(TrainTask):
    """A tiny pretrained-style ResNet (saved, then reloaded with from_pretrained: eval mode) + a head."""

    def __init__(self, folder):
        from transformers import ResNetConfig, ResNetModel

        torch.manual_seed(0)
        ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                 layer_type="basic")).save_pretrained(folder)
        backbone = ResNetModel.from_pretrained(folder)
        assert not backbone.training  # what from_pretrained returns
        self.model = torch.nn.ModuleDict({"backbone": backbone, "head": torch.nn.Linear(16, 2)})
        x = torch.randn(8, 3, 16, 16)
        self.train_dataset = torch.utils.data.TensorDataset(x, torch.arange(8) % 2)
        self.modes: list[bool] = []
        self.eval_modes: list[bool] = []

    def loss(self, model, batch):
        self.modes.append(all(m.training for m in model.modules()))
        x, y = batch
        features = model["backbone"](pixel_values=x).pooler_output.flatten(1)
        return torch.nn.functional.cross_entropy(model["head"](features), y)

    def evaluate(self, model, accelerator, step):
        self.eval_modes.append(not any(m.training for m in model.modules()))
        return {"score": 0.0}

    def save_pretrained(self, model, directory, state_dict=None):
        directory.mkdir(parents=True, exist_ok=True)


def test_reloaded_pretrained_backbone_trains_in_train_mode(tmp_path):
    task = _Backbone(tmp_path / "resnet")
    bn = next(m for m in task.model["backbone"].modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    run = _run(tmp_path, max_steps=1, clip_grad_norm=None)
    fit(task, run, make_accelerator(run))
    # BatchNorm statistics moved during the first step (before any evaluation).
    assert task.modes == [True] and not torch.equal(stats, bn.running_mean)

    task = _Backbone(tmp_path / "resnet2")
    run = _run(tmp_path / "b", max_steps=4, eval_every=1)
    fit(task, run, make_accelerator(run))
    assert task.modes == [True] * 4  # back in train mode after every evaluation
    assert task.eval_modes and all(task.eval_modes)


class _Sleepy(_Toy):
    def loss(self, model, batch):
        import time

        time.sleep(0.1)
        return super().loss(model, batch)


def test_steps_per_s_counts_the_steps_taken(tmp_path):
    # 2 steps of >= 0.1 s logged once (log_every 10 > 2): at most ~10 steps/s; counting log_every
    # steps instead of the 2 taken reported about 50.
    run = _run(tmp_path, max_steps=2, log_every=10)
    fit(_Sleepy(), run, make_accelerator(run))
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["step"] for r in rows] == [2]
    assert 0 < rows[0]["steps_per_s"] <= 10.0


class _Crash(_Toy):
    """Raises in the loss of optimizer step `crash_at` (0-based), as a killed process would stop."""

    def __init__(self, crash_at=None, scores=None):
        super().__init__(scores)
        self.crash_at = crash_at

    def loss(self, model, batch):
        if self.step == self.crash_at:
            raise RuntimeError("killed")
        return super().loss(model, batch)


def _weights(run_dir, step):
    from safetensors.torch import load_file

    ckpt = run_dir / "checkpoints" / f"step-{step}"
    return load_file(str(ckpt / "model" / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))


def test_resume_matches_a_straight_run_ema_and_metrics_included(tmp_path):
    train = dict(max_steps=4, checkpoint_every=2, keep_checkpoints=4, eval_every=1,
                 ema={"decay": 0.9, "warmup": True})
    straight = _run(tmp_path / "a", **train)
    fit(_Toy(), straight, make_accelerator(straight))

    resumed = _run(tmp_path / "b", **train)
    with pytest.raises(RuntimeError, match="killed"):  # steps 1 and 2 done and checkpointed, step 3 dies
        fit(_Crash(crash_at=2), resumed, make_accelerator(resumed))
    # The crash left log lines past the checkpoint? Simulate a later crash's leftovers too.
    with (resumed.dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 3, "lo')
    fit(_Toy(), resumed, make_accelerator(resumed), resume=True)

    (w_a, ema_a), (w_b, ema_b) = _weights(straight.dir, 4), _weights(resumed.dir, 4)
    assert w_a.keys() == w_b.keys() and ema_a.keys() == ema_b.keys()
    for key in w_a:
        torch.testing.assert_close(w_a[key], w_b[key], rtol=0, atol=1e-6)
        torch.testing.assert_close(ema_a[key], ema_b[key], rtol=0, atol=1e-6)
        assert not torch.equal(ema_a[key], w_a[key])  # the shadow is not just the weights

    def lines(run):
        return [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]

    a, b = lines(straight), lines(resumed)
    key = [(r["step"], "eval" in r) for r in a]
    assert [(r["step"], "eval" in r) for r in b] == key  # each step once: training line and evaluation
    assert key == [(1, False), (1, True), (2, False), (2, True), (3, False), (3, True), (4, False), (4, True)]
    assert [r.get("loss") for r in b] == pytest.approx([r.get("loss") for r in a])

    # Resuming a finished run trains nothing and writes no second final evaluation.
    fit(_Toy(), resumed, make_accelerator(resumed), resume=True)
    assert [(r["step"], "eval" in r) for r in lines(resumed)] == key


def test_an_early_stopped_run_stays_stopped_on_resume(tmp_path):
    run = _run(tmp_path, max_steps=20, eval_every=1, best_metric="score", early_stopping_patience=2)
    fit(_Toy(scores=[0.1, 0.5, 0.4, 0.3]), run, make_accelerator(run))
    task = _Toy(scores=[0.9] * 5)
    result = fit(task, run, make_accelerator(run), resume=True)
    assert result.step == 4 and task.seen == []  # nothing trained
    best = json.loads((run.dir / "best" / "best.json").read_text())
    assert best["step"] == 2
    evals = [json.loads(x)["step"] for x in (run.dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert evals == [1, 2, 3, 4]


def test_resume_with_more_steps_keeps_the_previous_final_evaluation(tmp_path):
    run = _run(tmp_path, max_steps=2)
    fit(_Toy(), run, make_accelerator(run))
    run.recipe.train.max_steps = 4
    fit(_Toy(), run, make_accelerator(run), resume=True)
    rows = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], "eval" in r) for r in rows] == [(1, False), (2, False), (2, True), (3, False), (4, False),
                                                        (4, True)]


_TRACKIO_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_training_loop import _Toy, _run
from emocli.training import fit, make_accelerator

run = _run(Path(sys.argv[1]), max_steps=3, trackers=["trackio"])
fit(_Toy(), run, make_accelerator(run))
"""


def test_trackio_logs_the_run_offline(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # A subprocess: trackio reads TRACKIO_DIR once, at import. No network: HF_HUB_OFFLINE and no Space.
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", _TRACKIO_RUN, str(tmp_path), str(Path(__file__).parent)],
                   env=env, check=True, capture_output=True, timeout=120)
    written = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    read_back = subprocess.run(
        [sys.executable, "-c", "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
                               "print(json.dumps(S.get_logs('toy', 'run')))"],
        env=env, check=True, capture_output=True, text=True, timeout=60).stdout
    logged = json.loads(read_back.strip().splitlines()[-1])
    # Three training lines and the final evaluation (the toy's score 0.0 at step 3), value for value.
    assert [r["step"] for r in logged] == [1, 2, 3, 3] == [r["step"] for r in written]
    for mine, theirs in zip(written[:3], logged[:3]):
        assert theirs["loss"] == pytest.approx(mine["loss"]) and theirs["lr"] == pytest.approx(mine["lr"])
    assert logged[3]["eval/score"] == written[3]["eval"]["score"] == 0.0
