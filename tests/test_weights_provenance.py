"""Weights provenance (emocli.evaluation.provenance): checksum, architecture signature, or unverified."""

from __future__ import annotations

import torch

from tests.conftest import shared_path

OFFICIAL_HEAD = ("data", "emogen-official", "weights", "Clip_emotion_classifier", "time_2023-11-12_03-29-best.pth")


def _inception_state(fc_classes: int | None) -> dict:
    from emocli.metrics.fid import FIDInceptionV3

    state = {k: torch.zeros(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    if fc_classes:
        state["fc.weight"], state["fc.bias"] = torch.zeros(fc_classes, 2048), torch.zeros(fc_classes)
    return state


def test_fid_network_is_verified_by_signature_or_flagged(tmp_path):
    from safetensors.torch import save_file

    from emocli.evaluation.provenance import check_weights

    fid = _inception_state(1008)
    save_file(fid, str(tmp_path / "fid.safetensors"))
    record = check_weights("inception", tmp_path / "fid.safetensors", fid)
    assert record["status"] == "signature" and "1008" in record["why"]
    # torchvision's ImageNet Inception has 1000 classes; our random tiny weights have no fc at all
    assert check_weights("inception", tmp_path / "fid.safetensors", _inception_state(1000))["status"] == "unverified"
    assert check_weights("inception", tmp_path / "fid.safetensors", _inception_state(None))["status"] == "unverified"
    # a .pth whose checksum is not the published 6726825d... is unverified even with the right shapes
    torch.save(fid, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    record = check_weights("inception", tmp_path / "pt_inception-2015-12-05-6726825d.pth", fid)
    assert record["status"] == "unverified" and "6726825d" in record["why"]


def test_the_released_emotion_head_is_verified_by_checksum():
    from emocli.evaluation.provenance import check_weights
    from emocli.methods.emotion_classifier.head import load_emotion_head

    path = shared_path(*OFFICIAL_HEAD)
    head, _ = load_emotion_head(path, "models.emotion_head")
    record = check_weights("emotion_head", path, head.state_dict())
    assert record["status"] == "verified" and record["sha256"].startswith("80f72314")
    other = {"fc.weight": torch.zeros(8, 32), "fc.bias": torch.zeros(8)}
    assert check_weights("emotion_head", "/nonexistent/head.safetensors", other)["status"] == "unverified"


def test_sem_c_resnets_by_signature():
    from emocli.evaluation.provenance import check_weights
    from emocli.metrics.semantic import ResNet50

    full = ResNet50(num_classes=365).state_dict()
    assert check_weights("scene_classifier", "/x/places.safetensors", full)["status"] == "signature"
    assert check_weights("object_classifier", "/x/in.safetensors", full)["status"] == "unverified"  # 365 != 1000
    tiny = ResNet50(num_classes=365, width=4, blocks=(1, 1, 1, 1)).state_dict()
    assert check_weights("scene_classifier", "/x/places.safetensors", tiny)["status"] == "unverified"
