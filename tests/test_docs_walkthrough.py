"""Every method guide's CPU walk-through runs as written.

A guide marks its walk-through as a fenced block whose info string is ``bash walkthrough``. The slow test
runs the block verbatim, in an empty temporary folder, with ``bash -euo pipefail``. The default test runs a
shortened variant: an HTML comment right after the block lists textual substitutions, one per line,

    <!-- walkthrough-short
    train.max_steps=300 => train.max_steps=20
    -->

and every left-hand side must occur in the block (so a stale substitution fails instead of silently running
the full length). A guide with a block but no comment runs verbatim in the default suite too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```bash walkthrough\n(?P<body>.*?)^```\n(?P<after>(?:\s*<!--\s*walkthrough-short\n.*?-->)?)",
                   re.S | re.M)


def walkthroughs() -> dict[str, tuple[str, list[tuple[str, str]] | None]]:
    """guide name -> (block text, substitutions of the shortened variant or None)."""
    found = {}
    for guide in sorted(DOCS.glob("*.md")):
        blocks = list(BLOCK.finditer(guide.read_text()))
        if len(blocks) > 1:
            raise AssertionError(f"{guide.name}: more than one walkthrough block")
        if not blocks:
            continue
        after = blocks[0]["after"].strip()
        subs = None
        if after:
            lines = [ln for ln in after.splitlines()[1:-1] if ln.strip()]
            subs = []
            for line in lines:
                if " => " not in line:
                    raise AssertionError(f"{guide.name}: substitution line without ' => ': {line!r}")
                old, new = line.split(" => ", 1)
                subs.append((old.strip(), new.strip()))
        found[guide.name] = (blocks[0]["body"], subs)
    return found


def shortened(name: str, body: str, subs: list[tuple[str, str]] | None) -> str:
    for old, new in subs or []:
        assert old in body, f"{name}: walkthrough-short substitution {old!r} does not occur in the block"
        body = body.replace(old, new)
    return body


def run_block(body: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


GUIDES = walkthroughs()


def test_the_block_format_is_recognised():
    text = "x\n```bash walkthrough\necho a\n```\n<!-- walkthrough-short\necho a => echo b\n-->\n"
    match = BLOCK.search(text)
    assert match and match["body"] == "echo a\n" and "echo a => echo b" in match["after"]


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_walkthrough_shortened(name, tmp_path):
    body, subs = GUIDES[name]
    done = run_block(shortened(name, body, subs), tmp_path, timeout=900)
    assert done.returncode == 0, f"{name} walkthrough failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, (_, subs) in GUIDES.items() if subs))
def test_walkthrough_verbatim(name, tmp_path):
    body, _ = GUIDES[name]
    done = run_block(body, tmp_path, timeout=3600)
    assert done.returncode == 0, f"{name} walkthrough failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


WRITTEN_ELSEWHERE = "written on another branch (r3 SEVLM / EmpathDiffuser guide work); the lead drops this mark at merge"


@pytest.mark.parametrize("guide", [
    "emogen.md", "ldm.md", "understanding.md",
    pytest.param("sevlm.md", marks=pytest.mark.xfail(strict=True, reason=WRITTEN_ELSEWHERE)),
    pytest.param("empathdiffuser.md", marks=pytest.mark.xfail(strict=True, reason=WRITTEN_ELSEWHERE)),
])
def test_every_method_guide_starts_with_a_walkthrough(guide):
    assert guide in GUIDES, f"docs/{guide} has no ```bash walkthrough block"
    body, subs = GUIDES[guide]
    assert "emo models make-tiny" in body and subs, f"docs/{guide}: tiny models and a walkthrough-short variant"
