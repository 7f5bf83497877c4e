"""Expected metric values for tests/test_metrics_golden.py, computed with the independent libraries.

Run it in a separate environment that has them (they need torchvision, which CI's CPU torch lacks):

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 torch-fidelity lpips torchmetrics scipy
    PYTHONPATH=. /work/refvenv/bin/python tools/golden_metrics.py > golden.json

It builds every network from `emocli.testing.golden` (seeded numpy PCG64 weights; key lists and shapes taken
from torchvision's models, checked by each reference's strict load), feeds the fixed images listed there, and prints JSON:

- FID: torch-fidelity's ``FeatureExtractorInceptionV3`` ("2048" features; its own TF1 resize and scaling)
  per image, summarised by an 8-d projection and the mean; the FID between the first and last six images
  with torch-fidelity's statistics and distance; and torchmetrics' ``FrechetInceptionDistance`` on the
  same features as a cross-check;
- LPIPS: the ``lpips`` package (v0.1, AlexNet; torchvision's AlexNet with the seeded weights, seeded heads);
- Sem-C: torchvision ResNet-50s (365 and 1000 classes) after torchvision's Resize(256) / CenterCrop(224) /
  Normalize; per image the top softmax probability and an 8-d projection of the logits.

Nothing from `emocli.metrics` is used here.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from emocli.testing import golden

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fid_reference() -> dict:
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    state = {k: torch.from_numpy(v) for k, v in golden.state_dict(_inception_layout()).items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights-inception-2015-12-05-6726825d.pth"
        torch.save(state, path)
        # torch-fidelity loads the file strictly: every key and shape of the published layout must be there
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    net.eval()
    feats = []
    with torch.no_grad():
        for seed, h, w in golden.FID_IMAGES:
            x = torch.from_numpy(golden.image(seed, h, w)).permute(2, 0, 1)[None].contiguous()
            feats.append(net(x)[0].double().numpy()[0])
    feats = np.stack(feats)
    a, b = feats[:6], feats[6:]
    fid = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(a)),
                                   fid_features_to_statistics(torch.from_numpy(b)), verbose=False)
    fid = float(fid["frechet_inception_distance"])
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Given(torch.nn.Module):  # feeds precomputed features to torchmetrics
        num_features = 2048

        def forward(self, x):
            return x.double()

    tm = FrechetInceptionDistance(feature=Given(), normalize=False)
    tm.update(torch.from_numpy(a), real=True)
    tm.update(torch.from_numpy(b), real=False)
    proj = golden.projection(2048, "fid")
    return {"torch_fidelity": torch_fidelity.__version__, "features_projection": (feats @ proj).tolist(),
            "features_mean": feats.mean(axis=1).tolist(), "fid_first6_vs_last6": fid,
            "fid_torchmetrics": float(tm.compute())}


def _inception_layout() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the published FID Inception file: the torchvision-style names of the trunk plus the
    1008-class fc. Only names and shapes are read here; torch-fidelity's strict load checks them."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def lpips_reference() -> dict:
    import lpips
    import torchvision

    alex = torchvision.models.alexnet(weights=None)
    alex_state = golden.state_dict((f"features.{k}", tuple(v.shape)) for k, v in alex.features.state_dict().items())
    model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    # lin0..lin4 only: `lins.N` aliases the same modules and would overwrite them on load
    heads = golden.state_dict((k, tuple(v.shape)) for k, v in model.state_dict().items()
                              if re.fullmatch(r"lin\d\.model\.1\.weight", k))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alex.pth"
        torch.save({k: torch.from_numpy(v) for k, v in heads.items()}, path)
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, model_path=str(path), verbose=False)
    # lpips' AlexNet is torchvision's `features` cut into slices that keep the original indices.
    with torch.no_grad():
        for name, param in model.net.named_parameters():
            _, index, what = name.split(".")
            param.copy_(torch.from_numpy(alex_state[f"features.{index}.{what}"]))
    model.eval()
    out = []
    with torch.no_grad():
        for (sa, ha, wa), (sb, hb, wb) in golden.LPIPS_PAIRS:
            x = lpips.im2tensor(golden.image(sa, ha, wa))
            y = lpips.im2tensor(golden.image(sb, hb, wb))
            out.append(float(model(x, y).flatten()[0]))
    from importlib.metadata import version

    return {"lpips_version": version("lpips"), "distances": out}


def sem_c_reference() -> dict:
    import torchvision
    from PIL import Image
    from torchvision import transforms

    prep = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                               transforms.Normalize(MEAN, STD)])
    x = torch.stack([prep(Image.fromarray(golden.image(*spec))) for spec in golden.SEM_C_IMAGES])
    out = {"torchvision": torchvision.__version__}
    for name, classes in (("scene", 365), ("object", 1000)):
        net = torchvision.models.resnet50(weights=None, num_classes=classes)
        state = golden.state_dict(((k, tuple(v.shape)) for k, v in net.state_dict().items()), seed=golden.SEED + classes)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        net.eval()
        with torch.no_grad():
            logits = net(x).double()
        out[f"{name}_top"] = torch.softmax(logits, 1).amax(1).tolist()
        out[f"{name}_projection"] = (logits.numpy() @ golden.projection(classes, name)).tolist()
    out["sem_c"] = float(np.maximum(out["scene_top"], out["object_top"]).mean())
    return out


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = {"torch": torch.__version__, "fid": fid_reference(), "lpips": lpips_reference(),
              "sem_c": sem_c_reference()}
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
