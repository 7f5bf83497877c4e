"""Agreement with the reference `lpips` package, where torchvision imports (the `vision` extra).

CI's CPU torch cannot have torchvision, so these skip there with the reason; they run on a
machine with `pip install -e ".[vision]"`.
"""

from __future__ import annotations

import pytest
import torch


def test_lpips_matches_reference_package_on_the_same_random_backbone():
    lpips = pytest.importorskip("lpips", reason="the reference lpips package needs torchvision (the vision extra)")
    from emocli.metrics.lpips import LPIPS, AlexNetFeatures

    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    # The reference's AlexNet is torchvision's `features` split into 5 slices; rebuild the flat state dict.
    flat = {}
    for k, v in reference.net.state_dict().items():
        _, index, rest = k.split(".", 2)  # sliceN.<index>.<weight|bias>
        flat[f"features.{index}.{rest}"] = v
    ours = LPIPS(AlexNetFeatures().load(flat)).load_heads(
        {k: v for k, v in reference.state_dict().items() if k.startswith("lin")})
    x, y = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = reference(x, y).flatten()
        got = ours(x, y)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
