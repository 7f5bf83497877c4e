"""Golden values: our FID Inception-v3, LPIPS and Sem-C ResNet-50s against numbers computed once by the
independent libraries (torch-fidelity 0.4, torchmetrics, lpips 0.1.4, torchvision 0.29.1 under torch 2.14.1)
on the same seeded weights and images (`emocli.testing.golden`; regenerate with tools/golden_metrics.py).

The weights are random but full-size and every layer matters, so a wrong pooling, padding count, branch
order, scaling constant, tap point or stride changes the numbers far beyond float32 noise (docs/metrics.md,
"Golden values").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emocli.testing import golden

# Printed by tools/golden_metrics.py (torch 2.14.1, torchvision 0.29.1, torch-fidelity 0.4.0, torchmetrics 1.9.0,
# lpips 0.1.4, on CPU); regenerate it there after changing emocli/testing/golden.py, never from emocli's own code.
EXPECTED = {'torch': '2.14.1+cu130',
 'fid': {'torch_fidelity': '0.4.0',
         'features_projection': [[-11.674547880119427,
                                  6.120683185363475,
                                  -16.221770664081525,
                                  -2.0665202474538136,
                                  58.25622894495062,
                                  -15.721837309654227,
                                  -25.063698540496738,
                                  28.890332430628185],
                                 [-11.94990544918775,
                                  12.347609739632162,
                                  -18.837726826457803,
                                  -4.50467703351649,
                                  65.26567737029978,
                                  -18.339814074251333,
                                  -29.937242118764054,
                                  32.2353431552005],
                                 [-11.186374120905924,
                                  11.827587689887693,
                                  -18.119837341601386,
                                  -0.8000997989610044,
                                  62.98443478146393,
                                  -19.409475181950594,
                                  -26.283609155366694,
                                  29.918476636897655],
                                 [-12.889900568858014,
                                  5.991622341016846,
                                  -14.69217336870748,
                                  0.4684396831545117,
                                  55.062017634586184,
                                  -16.481023575279714,
                                  -23.774364784179824,
                                  28.426472352218706],
                                 [-11.961665169919376,
                                  10.500309272954942,
                                  -17.778653107092506,
                                  -2.4184485001825498,
                                  60.72044982749554,
                                  -15.120452107277924,
                                  -23.87743225582568,
                                  27.647485181232312],
                                 [-14.313156715315008,
                                  9.508560318783118,
                                  -17.227607721082556,
                                  -2.362885755630127,
                                  57.376838361092,
                                  -17.182469316353433,
                                  -26.393819324755725,
                                  30.243514081964296],
                                 [-10.314900606440494,
                                  10.673642032199794,
                                  -19.19753518646974,
                                  -1.6434112676966173,
                                  65.70091364841332,
                                  -15.659051703280742,
                                  -28.32382691062919,
                                  35.13223224865538],
                                 [-12.438710608587176,
                                  10.18829066154003,
                                  -19.461966691453263,
                                  -6.200179421568571,
                                  67.02257684631,
                                  -18.799134741013955,
                                  -28.962152112258796,
                                  32.92169290420026],
                                 [-16.506849860303916,
                                  11.997498125875278,
                                  -19.43906748992039,
                                  -3.2401390349306425,
                                  66.46867105883847,
                                  -20.25863829696448,
                                  -30.071797733550596,
                                  33.693101357474596],
                                 [-14.290274322215064,
                                  13.024821170581749,
                                  -16.35891829653224,
                                  -0.42230129877753697,
                                  58.67586960063424,
                                  -16.435753292301694,
                                  -25.373783708143755,
                                  29.57642521545936],
                                 [-15.662142929708306,
                                  7.646525141445931,
                                  -15.668403357160377,
                                  0.12934911589441578,
                                  55.11397621331808,
                                  -17.30573155820688,
                                  -25.00397293286062,
                                  25.819294664489103],
                                 [-17.246120287537664,
                                  11.812582091059397,
                                  -20.765755011983742,
                                  -0.6000162112090379,
                                  69.73506450388652,
                                  -21.481985077088616,
                                  -32.28924843145184,
                                  37.97366377313226]],
         'features_mean': [0.7675185962443312,
                           0.84813200061825,
                           0.805995321311642,
                           0.7521335387578212,
                           0.7673029014486754,
                           0.8040712737572688,
                           0.8512548702687068,
                           0.8688364874773065,
                           0.8947771508232734,
                           0.8030830147912684,
                           0.7519103805499538,
                           0.9504963007512526],
         'fid_first6_vs_last6': 40.224019787876365,
         'fid_torchmetrics': 40.223990471820684},
 'lpips': {'lpips_version': '0.1.4',
           'distances': [0.023616861552000046, 0.023929959163069725, 0.023920884355902672, 0.0]},
 'sem_c': {'torchvision': '0.29.1+cu130',
           'scene_top': [0.13930319111373826, 0.17220996689008988, 0.21582154458558858],
           'scene_projection': [[-18.284615171582168,
                                 -19.341641476802167,
                                 17.871659233448984,
                                 15.420389389364654,
                                 5.717414233092336,
                                 -3.5634605183641668,
                                 -10.900340906986639,
                                 54.9220466366613],
                                [-18.648995843285512,
                                 -7.9355610031629915,
                                 7.196685161742951,
                                 15.255918898563136,
                                 3.4007985554637346,
                                 -1.88248538727286,
                                 -6.867893839416617,
                                 48.349382821708645],
                                [-22.798745589866513,
                                 -14.276031747910375,
                                 12.079564972141666,
                                 19.458155873575144,
                                 2.661906848263979,
                                 -3.9547221636438863,
                                 -10.662940230190799,
                                 53.87806822109002]],
           'object_top': [0.07644694742597365, 0.052107278330893694, 0.0707336444302568],
           'object_projection': [[-69.66051583621544,
                                  -7.830506716176693,
                                  18.928595480177542,
                                  1.6310160041596902,
                                  1.5272729350103589,
                                  -25.42242721912086,
                                  32.26090016518589,
                                  58.8966248918656],
                                 [-55.487595887951294,
                                  -12.521677856511198,
                                  8.00275062676996,
                                  6.107809620231656,
                                  0.1919048408343329,
                                  -33.24114034159852,
                                  31.04990425611314,
                                  47.72889319419052],
                                 [-59.772966511612104,
                                  -6.861425280367715,
                                  17.051218409413764,
                                  2.809803089285296,
                                  -0.6542924949620215,
                                  -30.46346626680813,
                                  35.78299826473755,
                                  53.09842206482138]],
           'sem_c': 0.17577823419647223}}


def _close(got, expected, rel: float) -> float:
    """Max absolute difference relative to the largest expected magnitude (asserted <= rel by the caller)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def _state(module: torch.nn.Module, seed: int = golden.SEED) -> dict[str, torch.Tensor]:
    keys = [(k, tuple(v.shape)) for k, v in module.state_dict().items()]
    return {k: torch.from_numpy(v) for k, v in golden.state_dict(keys, seed).items()}


@pytest.fixture(scope="module")
def fid_features() -> np.ndarray:
    from emocli.metrics.fid import FIDInceptionV3, InceptionFeatures, load_inception_weights

    net = FIDInceptionV3()
    load_inception_weights(net, _state(net))
    model = InceptionFeatures(net, mode="tf")
    rows = []
    for seed, h, w in golden.FID_IMAGES:
        x = torch.from_numpy(golden.image(seed, h, w)).permute(2, 0, 1)[None].contiguous()
        rows.append(model(x)[0].double().numpy())
    return np.stack(rows)


def test_fid_inception_features_match_torch_fidelity(fid_features):
    """Per-image 2048-d pool3 features (TF1 resize from several sizes, (x-128)/128, the FID network)."""
    exp = EXPECTED["fid"]
    proj = fid_features @ golden.projection(2048, "fid")
    assert _close(proj, exp["features_projection"], 0) <= 2e-5, _close(proj, exp["features_projection"], 0)
    assert _close(fid_features.mean(axis=1), exp["features_mean"], 0) <= 2e-5


def test_fid_value_matches_torch_fidelity_and_torchmetrics(fid_features):
    """FID of the first six images against the last six: torch-fidelity's sqrtm and torchmetrics' eigvals on
    their own features, against our low-rank form (the path per-emotion FIDs and bootstrap resamples take)."""
    from emocli.methods.eval_generation.evaluate import frechet_to_features
    from emocli.metrics.fid import FeatureStats

    exp = EXPECTED["fid"]
    assert exp["fid_first6_vs_last6"] == pytest.approx(exp["fid_torchmetrics"], rel=1e-6)  # the two references
    lowrank, how = frechet_to_features(fid_features[6:], FeatureStats.from_features(fid_features[:6]), "auto")
    assert how == "lowrank-exact" and lowrank == pytest.approx(exp["fid_first6_vs_last6"], rel=5e-5)


@pytest.mark.slow
def test_fid_value_by_the_full_rank_form(fid_features):
    from emocli.metrics.fid import FeatureStats

    a, b = FeatureStats.from_features(fid_features[:6]), FeatureStats.from_features(fid_features[6:])
    assert a.fid(b) == pytest.approx(EXPECTED["fid"]["fid_first6_vs_last6"], rel=5e-5)


def test_lpips_matches_the_lpips_package():
    from emocli.metrics.lpips import LPIPS, AlexNetFeatures

    backbone = AlexNetFeatures()
    backbone.load(_state(backbone))
    model = LPIPS(backbone)
    model.load_heads({k: v for k, v in _state(model).items() if k.startswith("lin")})
    got = []
    for (sa, ha, wa), (sb, hb, wb) in golden.LPIPS_PAIRS:
        x = torch.from_numpy(golden.image(sa, ha, wa)).permute(2, 0, 1)[None]
        y = torch.from_numpy(golden.image(sb, hb, wb)).permute(2, 0, 1)[None]
        got.append(float(model.distance(x, y, value_range="uint8")[0]))
    expected = EXPECTED["lpips"]["distances"]
    assert expected[-1] == 0.0 and got[-1] == 0.0  # an image against itself
    assert _close(got, expected, 0) <= 1e-5, (got, expected)


def test_sem_c_resnets_match_torchvision():
    from PIL import Image

    from emocli.metrics.semantic import ResNet50, imagenet_preprocess

    x = imagenet_preprocess([Image.fromarray(golden.image(*spec)) for spec in golden.SEM_C_IMAGES])
    exp = EXPECTED["sem_c"]
    tops = {}
    for name, classes in (("scene", 365), ("object", 1000)):
        net = ResNet50(num_classes=classes)
        net.load_state_dict(_state(net, golden.SEED + classes), strict=False)
        net.eval()
        with torch.no_grad():
            logits = net(x).double()
        tops[name] = torch.softmax(logits, 1).amax(1).numpy()
        proj = logits.numpy() @ golden.projection(classes, name)
        assert _close(proj, exp[f"{name}_projection"], 0) <= 2e-5, (name, _close(proj, exp[f"{name}_projection"], 0))
        assert _close(tops[name], exp[f"{name}_top"], 0) <= 2e-5, name
    assert float(np.maximum(tops["scene"], tops["object"]).mean()) == pytest.approx(exp["sem_c"], rel=2e-5)
