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
    run_dir.mkdir()
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
