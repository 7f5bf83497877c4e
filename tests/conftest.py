"""Shared fixtures: offline Hub, the repository root, small synthetic datasets built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run_emo(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real `emo` CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "emocli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def emoset_tiny(tmp_path_factory) -> Path:
    """A 160-image synthetic EmoSet in the official layout, shared by the tests."""
    from emocli.data.synth import synth_emoset

    return synth_emoset(tmp_path_factory.mktemp("emoset") / "emoset", n=160, seed=0)


@pytest.fixture(scope="session")
def emoset_prepared(emoset_tiny, tmp_path_factory) -> Path:
    """`emoset_tiny` prepared (`emo data prepare emoset`): what every EmoSet consumer reads."""
    from emocli.data.prepare import prepare_emoset

    return prepare_emoset(str(emoset_tiny), tmp_path_factory.mktemp("prepared") / "prepared")


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared release artifacts are not next to this checkout")
    return path
