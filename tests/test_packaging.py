"""`pip install .` (not editable): the wheel carries the shipped recipes, and the installed `emo` works from
outside the checkout. The wheel is built from a copy of the sources, installed with --no-deps into a fresh
venv that sees this interpreter's site-packages through a .pth file (a venv made from a venv cannot inherit
them with --system-site-packages), and run with no PYTHONPATH from a temporary directory. Slow: building and
installing the wheel takes ~40 s, the tiny training run from the installed copy one to a few minutes on 2 cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "emocli", "recipes")


def _run(cmd, cwd, env=None, timeout=600):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "shipped_recipes"))
        else:
            shutil.copy2(path, src / name)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], cwd=root)
    wheel = next(dist.glob("emocli-*.whl"))

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "zz_outer_site_packages.pth").write_text("\n".join(sorted(here)) + "\n")
    start = time.perf_counter()
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--ignore-installed", "-q", wheel],
         cwd=root)
    install_s = time.perf_counter() - start
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EMO_RECIPES", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    away = root / "elsewhere"
    away.mkdir()
    print(f"wheel install: {install_s:.1f} s")
    return {"wheel": wheel, "venv": venv, "python": python, "emo": venv / "bin" / "emo", "env": env, "cwd": away,
            "purelib": Path(purelib), "install_s": install_s}


@pytest.mark.slow
def test_wheel_ships_every_recipe(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = {n for n in z.namelist() if n.startswith("emocli/shipped_recipes/")}
    shipped = {f"emocli/shipped_recipes/{p.relative_to(ROOT / 'recipes').as_posix()}"
               for p in (ROOT / "recipes").rglob("*.yaml")}
    assert shipped and names == shipped


@pytest.mark.slow
def test_installed_emo_lists_copies_and_trains_outside_the_checkout(installed, emoset_tiny):
    from emocli.data.prepare import prepare_emoset
    from emocli.testing.tiny import make_tiny

    env, cwd, emo = installed["env"], installed["cwd"], installed["emo"]
    where = _run([installed["python"], "-c", "import emocli, emocli.recipes.load as l; print(emocli.__file__); "
                  "print(l.recipe_dir())"], cwd=cwd, env=env).stdout.split()
    assert where[0].startswith(str(installed["purelib"])), where  # the wheel's copy, not the checkout
    assert where[1] == str(installed["purelib"] / "emocli" / "shipped_recipes")

    listed = _run([emo, "recipes", "list"], cwd=cwd, env=env).stdout
    assert "grpo-full" in listed and "tiny/emotion-classifier" in listed
    _run([emo, "recipes", "cp", "tiny/emotion-classifier", cwd / "mine.yaml"], cwd=cwd, env=env)
    assert (cwd / "mine.yaml").read_text() == (ROOT / "recipes" / "tiny" / "emotion-classifier.yaml").read_text()

    models = make_tiny(cwd / "models", which=("clip",))
    prepared = prepare_emoset(str(emoset_tiny), cwd / "prepared")
    out = cwd / "runs" / "classifier"
    _run([emo, "train", "emotion-classifier", "mine.yaml", f"model.clip={models['clip']}",
          f"data.prepared={prepared}", f"run.output_dir={out}", "train.epochs=2"], cwd=cwd, env=env)
    assert (out / "final").is_dir() and (out / "recipe.yaml").is_file()
