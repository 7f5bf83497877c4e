"""Weights-only loading: one helper, one-line refusals, and no other `torch.load` in the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from emocli.errors import EmoError
from emocli.safeload import load_weights_only

ROOT = Path(__file__).resolve().parents[1]


def test_a_state_dict_loads_and_a_pickled_payload_is_refused_in_one_line(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    assert torch.equal(load_weights_only(plain)["w"], torch.ones(2))

    payload = tmp_path / "payload.pth"
    torch.save({"w": torch.ones(2), "extra": Path("x")}, payload)  # a pathlib object is not a tensor
    with pytest.raises(EmoError) as err:
        load_weights_only(payload, what="emotion head")
    message = str(err.value)
    assert "\n" not in message and "emotion head" in message and "payload.pth" in message
    assert "Path" in message and "nothing was unpickled" in message and "weights_only" not in message

    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(EmoError, match="not a readable torch checkpoint"):
        load_weights_only(tmp_path / "text.pt")
    with pytest.raises(EmoError, match="does not exist"):
        load_weights_only(tmp_path / "absent.pt")


def test_every_torch_load_goes_through_safeload():
    calls = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "emocli").rglob("*.py"))
             if p.name != "safeload.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\btorch\.load\(", line.split("#")[0]) and "``" not in line]
    assert calls == [], "call emocli.safeload.load_weights_only instead"
