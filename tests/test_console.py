"""A quiet console (emocli/console.py): library warnings and load reports go to the log file, not the terminal."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, run_emo

# Library messages a command meets, planted at the places real ones come from: a FutureWarning from the
# warnings module, a transformers load report, a DeepSpeed notice; and one message emo itself means.
DRIVER = """
import logging, sys, warnings
from emocli import cli

def command():
    warnings.warn("`foo` is deprecated and will be removed in v6", FutureWarning)
    logging.getLogger("transformers.modeling_utils").warning("Some weights were not used: text_model.x")
    logging.getLogger("DeepSpeed").warning("Setting accelerator to CPU")
    logging.getLogger("emocli").warning("emo means this one")

cli.app.command("planted")(command)
sys.argv = ["emo", *sys.argv[1:], "planted"]
cli.main()
"""
PLANTED = ("`foo` is deprecated", "Some weights were not used", "Setting accelerator to CPU")


def _run(*options):
    return subprocess.run([sys.executable, "-c", DRIVER, *options], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_library_messages_go_to_the_log_file_and_one_line_says_so(tmp_path):
    log = tmp_path / "log.txt"
    done = _run("--log-file", str(log))
    assert done.returncode == 0, done.stderr
    for text in PLANTED:
        assert text not in done.stderr and text in log.read_text()
    assert "emo means this one" in done.stderr  # emo's own messages stay
    assert f"3 library messages in {log} (emo --verbose shows them)" in done.stderr
    assert len(re.findall(r"^\d{4}-\d\d-\d\d ", log.read_text(), re.M)) == 3


def test_verbose_shows_them(tmp_path):
    done = _run("--verbose", "--log-file", str(tmp_path / "log.txt"))
    assert done.returncode == 0, done.stderr
    for text in PLANTED:
        assert text in done.stderr
    assert "3 library messages shown above" in done.stderr
    hidden = _run()  # no file and not verbose: counted, not shown
    assert "3 library messages hidden (emo --verbose shows them" in hidden.stderr
    assert not any(text in hidden.stderr for text in PLANTED)


def test_a_real_command_prints_no_library_line(tmp_path):
    """`emo models make-tiny` loads transformers/diffusers/accelerate: whatever they report is in the file."""
    log = tmp_path / "lib.txt"
    done = run_emo("--log-file", str(log), "models", "make-tiny", "--out", str(tmp_path / "m"), "--only", "sd,clip")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert all("library message" in ln for ln in lines), done.stderr  # nothing else on stderr
    records = log.read_text().splitlines() if log.exists() else []
    for record in records:
        assert record.split("] ", 1)[-1][:60] not in done.stderr
    count = len(re.findall(r"^\d{4}-\d\d-\d\d ", "\n".join(records), re.M))
    assert (f"{count} library message" in done.stderr) == (count > 0)


def test_a_run_keeps_them_in_its_log_txt(emoset_prepared, tmp_path):
    out = tmp_path / "run"
    done = run_emo("train", "emotion-encoder", "tiny/emotion-encoder", f"data.prepared={emoset_prepared}",
                   f"run.output_dir={out}", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    routed = [ln for ln in (out / "log.txt").read_text().splitlines() if re.match(r"^\S+ \S+ \w+ \[(?!emocli)", ln)]
    for line in routed:
        assert line.split("] ", 1)[-1][:60] not in done.stderr
    if routed:  # on a CPU machine at least DeepSpeed's accelerator notice
        assert f"{len(routed)} library message{'s' if len(routed) != 1 else ''} in {out / 'log.txt'}" in done.stderr
