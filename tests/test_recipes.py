"""Every shipped recipe validates; the override grammar; precedence."""

from __future__ import annotations

import pytest

from emocli.errors import EmoError
from emocli.recipes.load import apply_overrides, list_recipes, load_recipe


@pytest.mark.parametrize("name", [name for name, _ in list_recipes()])
def test_every_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.method


def test_there_is_a_tiny_twin_for_every_real_recipe():
    names = {name for name, _ in list_recipes()}
    for name in names:
        if not name.startswith("tiny/"):
            assert f"tiny/{name}" in names, f"{name} has no CPU twin under recipes/tiny/"


def test_override_grammar():
    data = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    apply_overrides(data, ["a.b=3.0e-4", "a.c.d=[1, 2]", "new.key=yes", "~e", "a.s=hello world"])
    assert data == {"a": {"b": 3.0e-4, "c": {"d": [1, 2]}, "s": "hello world"}, "new": {"key": True}}
    with pytest.raises(EmoError, match="no key"):
        apply_overrides(data, ["~a.zz"])
    with pytest.raises(EmoError, match="key.path=value"):
        apply_overrides(data, ["justaword"])
    with pytest.raises(EmoError, match="is a value"):
        apply_overrides(data, ["a.b.c=1"])


def test_schema_coerces_yaml_quirks():
    recipe = load_recipe("tiny/emotion-encoder", ["optim.lr=3e-4"])  # YAML reads 3e-4 as a string
    assert recipe.optim.lr == pytest.approx(3e-4)


def test_unknown_key_error_names_key_and_close_match():
    with pytest.raises(EmoError) as err:
        load_recipe("tiny/emotion-encoder", ["model.backbone.pretraind=x"])
    assert "model.backbone.pretraind" in str(err.value) and "pretrained" in str(err.value)


def test_a_folder_named_like_a_recipe_does_not_shadow_it(tmp_path, monkeypatch):
    from emocli.recipes.load import find_recipe

    (tmp_path / "emotion-encoder").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_recipe("emotion-encoder").name == "emotion-encoder.yaml"
    with pytest.raises(EmoError, match="does not exist"):
        find_recipe("missing.yaml")


def test_overrides_are_read_against_the_schema():
    # YAML 1.1 reads no/yes/on/off as booleans and 2024 as a number; the schema wants text there.
    recipe = load_recipe("tiny/emotion-encoder", ["launch.mixed_precision=no", "run.name=2024",
                                                  "data.flip=no", "train.ema.export=off", "optim.lr=3e-4"])
    assert recipe.launch.mixed_precision == "no" and recipe.run.name == "2024"
    assert recipe.data.flip is False and recipe.train.ema.export is False  # real booleans stay booleans
    assert load_recipe("tiny/emotion-encoder", ["train.best_mode=min"]).train.best_mode == "min"
    with pytest.raises(EmoError, match="mixed_precision.*got 'yes'"):
        load_recipe("tiny/emotion-encoder", ["launch.mixed_precision=yes"])


def test_an_unquoted_no_in_a_recipe_file_gets_a_hint(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("method: emoclip\ndata: {prepared: x}\nlaunch: {mixed_precision: no}\n")
    with pytest.raises(EmoError, match="quote the word"):
        load_recipe(path)
