"""EmoGen sampling on the tiny SD: equivalence with diffusers, fusion, reproducibility, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from emocli.emotion_space import EmotionSpace
from emocli.methods.emogen.mapper import Mapper
from tests.conftest import run_emo, shared_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from emocli.testing.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"), which=("sd", "clip"))


def _word_mapper(pipe, word: str, in_dim: int = 768) -> Mapper:
    """A mapper whose output is always the token embedding of `word` (fc, zero weight, bias = embedding)."""
    tok = pipe.tokenizer
    pieces = tok.tokenize(word)
    assert len(pieces) == 1, pieces
    emb = pipe.text_encoder.get_input_embeddings().weight[tok.convert_tokens_to_ids(pieces[0])]
    mapper = Mapper(in_dim=in_dim, out_dim=emb.shape[0], name="fc", encoder=ENCODER)
    with torch.no_grad():
        mapper.net.weight.zero_()
        mapper.net.bias.copy_(emb)
    return mapper


ENCODER = "f" * 64  # the emotion-encoder fingerprint shared by the test mapper and space


def _space(dim=768, seed=0, encoder=ENCODER):
    g = torch.Generator().manual_seed(seed)
    return EmotionSpace(torch.randn(8, dim, generator=g), torch.rand(8, dim, generator=g) + 0.1, encoder=encoder)


def test_injected_word_embedding_equals_diffusers_prompted_with_the_word(tiny):
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    from emocli.methods.emogen.sample import EmoGenSampler, load_sd_pipeline

    pipe = load_sd_pipeline(str(tiny["sd"]))
    sampler = EmoGenSampler(pipe, _word_mapper(pipe, "cup"), _space())
    ours = [np.asarray(img) for _, img, _ in sampler.generate("fear", n=2, seed=3, steps=4, guidance=5.0)]

    ref = StableDiffusionPipeline.from_pretrained(str(tiny["sd"]), safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    ref.scheduler = UniPCMultistepScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    theirs = ref(["cup", "cup"], num_inference_steps=4, guidance_scale=5.0,
                 generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]).images
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, np.asarray(b))


def test_fusion_uses_two_placeholders_and_never_touches_special_tokens(tiny):
    from emocli.methods.emogen.injection import tokenize
    from emocli.methods.emogen.sample import PLACEHOLDERS, EmoGenSampler, load_sd_pipeline, prompt_text

    pipe = load_sd_pipeline(str(tiny["sd"]))
    sampler = EmoGenSampler(pipe, Mapper(768, 32, hidden_dim=16, encoder=ENCODER), _space())
    tok = pipe.tokenizer
    ids = tokenize(tok, [prompt_text(list(PLACEHOLDERS), "cup")])[0].tolist()
    special = set(tok.all_special_ids)
    a, b = sampler.placeholder_ids
    assert a != b and a not in special and b not in special
    assert ids.count(a) == 1 and ids.count(b) == 1
    # The end-of-text / padding embedding is what it was: only placeholder positions change.
    eos = tok.eos_token_id
    plain = pipe.text_encoder.get_input_embeddings()(torch.tensor([[eos]]))
    cond = sampler.prompt_embeds("fear", [0], seed=0, obj="cup", fuse="awe")
    assert cond.shape == (1, 77, 32)
    assert torch.equal(pipe.text_encoder.get_input_embeddings()(torch.tensor([[eos]])), plain)


def test_same_seed_same_png_bytes_and_sidecars(tiny, tmp_path):
    mapper_dir, space_file = tmp_path / "mapper", tmp_path / "space.safetensors"
    Mapper(768, 32, hidden_dim=16, encoder=ENCODER).save_pretrained(mapper_dir)
    _space().save(space_file)
    digests = []
    for name in ("a", "b"):
        out = tmp_path / name
        done = run_emo("sample", "--emotion", "fear", "--object", "cup", "--n", "2", "--seed", "7", "--steps", "3",
                       "--sd", str(tiny["sd"]), "--mapper", str(mapper_dir), "--space", str(space_file),
                       "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        files = sorted((out / "fear").glob("*.png"))
        assert [f.name for f in files] == ["fear_0000.png", "fear_0001.png"]
        digests.append([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
        side = json.loads((out / "fear" / "fear_0001.json").read_text())
        assert side["seed"] == 7 and side["index"] == 1 and side["object"] == "cup" and side["steps"] == 3
        assert side["prompt"] == "<emotion> cup" and (out / "grid.png").is_file()
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[0][1]


def test_released_emotion_space_drives_sampling(tiny, tmp_path):
    official = shared_path("data", "emogen-official", "emo_space")
    mapper_dir = tmp_path / "mapper"
    Mapper(768, 32, hidden_dim=16, encoder=ENCODER).save_pretrained(mapper_dir)
    out = tmp_path / "out"
    args = ["sample", "--emotion", "all", "--n", "1", "--steps", "2", "--sd", str(tiny["sd"]),
            "--mapper", str(mapper_dir), "--space", str(official), "--out", str(out)]
    # the released space was made by EmoGen's own (lost) encoder, not the one this mapper learned from
    from emocli.errors import EmoError
    from emocli.methods.emogen.sample import make_sampler

    with pytest.raises(EmoError, match="records no emotion encoder.*--allow-foreign-space"):
        make_sampler(sd=str(tiny["sd"]), mapper=mapper_dir, space=official)
    done = run_emo(*args, "--allow-foreign-space")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "used anyway" in done.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        ["amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness"])
    assert json.loads((out / "fear" / "fear_0000.json").read_text())["foreign_space"] is True


def test_space_of_another_encoder_is_refused(tiny):
    from emocli.errors import EmoError
    from emocli.methods.emogen.sample import EmoGenSampler, load_sd_pipeline

    pipe = load_sd_pipeline(str(tiny["sd"]))
    mapper = Mapper(768, 32, hidden_dim=16, encoder=ENCODER)
    with pytest.raises(EmoError, match="trained on encoder ffffffffffff"):
        EmoGenSampler(pipe, mapper, _space(encoder="0" * 64))
    with pytest.raises(EmoError, match="mapper records no encoder"):
        EmoGenSampler(pipe, Mapper(768, 32, hidden_dim=16), _space())
    assert EmoGenSampler(pipe, mapper, _space()).source.get("foreign_space") is None


def test_mix_interpolates_and_fuse_fusion_run(tiny, tmp_path):
    mapper_dir, space_file = tmp_path / "mapper", tmp_path / "space.safetensors"
    Mapper(768, 32, hidden_dim=16, encoder=ENCODER).save_pretrained(mapper_dir)
    _space().save(space_file)
    for extra in (["--fuse", "awe"], ["--fuse", "awe", "--mix", "0.3"]):
        out = tmp_path / "-".join(extra)
        done = run_emo("sample", "--emotion", "fear", "--n", "1", "--steps", "2", "--sd", str(tiny["sd"]),
                       "--mapper", str(mapper_dir), "--space", str(space_file), "--out", str(out), *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        side = json.loads((out / "fear" / "fear_0000.json").read_text())
        assert side["fuse"] == "awe"
        assert side["prompt"] == ("<emotion>" if "--mix" in extra else "<emotion> <emotion_2>")


def test_bad_sample_input_is_one_line_exit_2(tiny, tmp_path):
    mapper_dir = tmp_path / "mapper"
    Mapper(768, 32, hidden_dim=16, encoder=ENCODER).save_pretrained(mapper_dir)
    wrong = tmp_path / "wrong.safetensors"
    _space(dim=512).save(wrong)
    cases = [
        (["--emotion", "joy"], "amusement, awe, contentment, excitement, anger, disgust, fear, sadness"),
        (["--emotion", "fear", "--space", str(wrong)], "dimension 512"),
        (["--emotion", "fear", "--mix", "0.5"], "--fuse"),
    ]
    for args, expected in cases:
        base = ["sample", "--n", "1", "--sd", str(tiny["sd"]), "--mapper", str(mapper_dir), "--out", str(tmp_path / "o")]
        if "--space" not in args:
            base += ["--space", str(wrong).replace("wrong", "none")]
        done = run_emo(*base, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_unadded_token_replays_the_released_inference(tiny):
    """--unadded-token: the released code wrote the mapper vector into the row of the id that
    convert_tokens_to_ids gave the never-added "<fear>": the unknown = end-of-text id, whose embedding
    also fills the padding. Reference: that very row write on a copy of the text encoder."""
    import copy

    from emocli.methods.emogen.injection import tokenize
    from emocli.methods.emogen.sample import EmoGenSampler, load_sd_pipeline

    pipe = load_sd_pipeline(str(tiny["sd"]))
    tok = pipe.tokenizer
    sampler = EmoGenSampler(pipe, Mapper(768, 32, hidden_dim=16, encoder=ENCODER), _space(), unadded_token=True)
    ours = sampler.prompt_embeds("fear", [0, 1], seed=5)

    unk = tok.convert_tokens_to_ids("<fear>")
    assert unk == tok.unk_token_id == tok.eos_token_id == tok.pad_token_id
    ids = tokenize(tok, ["<fear>"])
    assert (ids == unk).sum() > 1  # end-of-text and every padding position
    for i in (0, 1):
        vector = sampler.mapper(_space().sample("fear", 1, torch.Generator().manual_seed(5 * 100003 + i)))
        patched = copy.deepcopy(pipe.text_encoder)
        with torch.no_grad():
            patched.get_input_embeddings().weight[unk] = vector[0]
            reference = patched(input_ids=ids).last_hidden_state[0]
        assert torch.allclose(ours[i], reference, atol=1e-5)
    # the default (an added placeholder) differs, and the padding is untouched there
    assert not torch.allclose(EmoGenSampler(pipe, sampler.mapper, _space()).prompt_embeds("fear", [0], seed=5)[0],
                              ours[0], atol=1e-3)
    # the unconditional prompt was encoded before any row write: plain
    plain = pipe.text_encoder(input_ids=tokenize(tok, [""])).last_hidden_state
    assert torch.equal(sampler.negative_embeds(1), plain)
    _, _, params = next(sampler.generate("fear", n=1, steps=1))
    assert params["prompt"] == "<fear>" and params["unadded_token"] is True
