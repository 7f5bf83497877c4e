"""The `emo` command line: light imports, version, errors, recipes commands."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import ROOT, run_emo

HEAVY = ("torch", "diffusers", "transformers", "datasets", "trl", "accelerate", "deepspeed")


def test_import_cli_imports_nothing_heavy():
    code = f"import sys, emocli.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"emocli.cli imported: {out.stdout.strip()}"


def test_version_and_help():
    from emocli import __version__

    out = run_emo("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = run_emo("--help")
    assert out.returncode == 0
    for group in ("recipes", "data", "train", "models"):
        assert group in out.stdout


def test_misspelled_key_is_one_line_exit_2():
    out = run_emo("recipes", "show", "tiny/emotion-encoder", "train.bach_size=3")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "train.bach_size" in lines[0] and "batch_size" in lines[0] and "emotion-encoder.yaml" in lines[0]
    assert "Traceback" not in out.stderr


def test_misspelled_key_in_a_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((ROOT / "recipes/tiny/emotion-encoder.yaml").read_text())
    data["optim"]["learning_rate"] = 0.1
    bad.write_text(yaml.safe_dump(data))
    out = run_emo("recipes", "validate", str(bad))
    assert out.returncode == 2
    assert "optim.learning_rate" in out.stderr and str(bad) in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_type_error_names_key_and_type():
    out = run_emo("recipes", "show", "tiny/emotion-encoder", "train.batch_size=many")
    assert out.returncode == 2
    assert "train.batch_size" in out.stderr and "integer" in out.stderr


def test_debug_shows_traceback():
    out = run_emo("--debug", "recipes", "show", "tiny/emotion-encoder", "train.bach_size=3")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_unknown_recipe_lists_close_matches():
    out = run_emo("recipes", "show", "tiny/emotion-encodr")
    assert out.returncode == 2 and "tiny/emotion-encoder" in out.stderr


def test_recipes_list_show_cp_validate(tmp_path):
    out = run_emo("recipes", "ls")
    assert out.returncode == 0 and "tiny/emotion-encoder" in out.stdout
    out = run_emo("recipes", "show", "tiny/emotion-encoder", "optim.lr=3e-4", "~train.checkpoint_every")
    assert out.returncode == 0
    shown = yaml.safe_load(out.stdout)
    assert shown["optim"]["lr"] == 3e-4 and shown["train"]["checkpoint_every"] is None
    assert shown["train"]["keep_checkpoints"] == 2  # defaults are filled in
    out = run_emo("recipes", "cp", "tiny/emotion-encoder", str(tmp_path / "mine.yaml"))
    assert out.returncode == 0 and (tmp_path / "mine.yaml").is_file()
    out = run_emo("recipes", "cp", "tiny/emotion-encoder", str(tmp_path / "mine.yaml"))
    assert out.returncode == 2  # never overwrites
    out = run_emo("recipes", "validate", str(tmp_path / "mine.yaml"))
    assert out.returncode == 0 and "ok" in out.stdout


def test_train_dry_run_prints_launch_command():
    out = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", "--num-processes", "2",
                  "--accelerate-config", "zero2", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "accelerate.commands.launch" in out.stdout and "--num_processes 2" in out.stdout
    assert "emocli.worker" in out.stdout
    out = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", "--dry-run")
    assert "in-process" in out.stdout


def test_wrong_method_recipe_is_rejected(tmp_path):
    data = yaml.safe_load((ROOT / "recipes/tiny/emotion-encoder.yaml").read_text())
    data["method"] = "no-such-method"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_emo("recipes", "validate", str(path))
    assert out.returncode == 2 and "no-such-method" in out.stderr and "emotion-encoder" in out.stderr
