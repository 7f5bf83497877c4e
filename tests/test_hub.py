"""Where a pretrained name points: a typo in a local path is a missing path (not "Hub unreachable"), a folder
that is not a model says so, and an unknown Hub id without network fails at once (offline is detected once,
HF_HUB_OFFLINE is respected) instead of after the Hub client's retries."""

from __future__ import annotations

import pytest

from emocli import hub
from emocli.errors import EmoError


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    monkeypatch.setattr(hub, "_offline", None)


def _never_called(*args, **kwargs):
    raise AssertionError("the loader must not be called")


def test_typo_in_a_local_path_is_a_missing_path(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny" / "vlm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "_reachable", _never_called)  # no Hub look-up at all
    for typo in ("models/tiny/vlmm", "models/vlmm", "./vlm", str(tmp_path / "nope")):
        with pytest.raises(EmoError, match="does not exist \\(recipe key model.pretrained\\)") as e:
            hub.load_pretrained(_never_called, typo, "model.pretrained")
        assert "Hub" not in str(e.value)


def test_a_folder_that_is_not_a_model_says_so(tmp_path):
    from emocli.methods.grpo.evaluate import load_processor

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"not a model")
    with pytest.raises(EmoError, match="is not a model folder"):
        hub.load_pretrained(_never_called, str(folder), "model.clip")
    # the VLM processor loader used to blame a missing torchvision here
    with pytest.raises(EmoError, match="is not a model folder") as e:
        load_processor(str(folder), "model.pretrained")
    assert "torchvision" not in str(e.value)


def test_model_folders_are_recognised(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text("{}")
        assert hub._looks_like_model(folder)
    pipeline = tmp_path / "pipe" / "unet"
    pipeline.mkdir(parents=True)
    (pipeline / "config.json").write_text("{}")
    assert hub._looks_like_model(tmp_path / "pipe")  # diffusers layout: files one level down


def test_offline_is_detected_once_and_hub_ids_load_from_the_cache_only(monkeypatch):
    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint, timeout: calls.append(endpoint) or False)
    seen = []

    def loader(name, **kwargs):
        seen.append(kwargs)
        raise OSError("not cached")

    for _ in range(3):
        with pytest.raises(EmoError, match="not in the local Hugging Face cache and the Hub is unreachable"):
            hub.load_pretrained(loader, "someorg/no-such-model", "model.pretrained", dtype="x")
    assert len(calls) == 1  # probed once per process
    assert seen == [{"dtype": "x", "local_files_only": True}] * 3


def test_hf_hub_offline_is_respected_without_probing(monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_reachable", _never_called)
    with pytest.raises(EmoError, match="HF_HUB_OFFLINE is set"):
        hub.load_pretrained(AutoConfig.from_pretrained, "someorg/no-such-model", "model.pretrained")


def test_unreachable_endpoint_probe_is_bounded():
    # a port nothing listens on: refused at once, reported unreachable
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert hub._reachable(f"http://127.0.0.1:{port}", timeout=2.0) is False
    assert hub._reachable("https://", timeout=2.0) is False
