"""Find, load, override and validate recipes.

Precedence: schema defaults < recipe file < `key=value` overrides < explicit CLI flags.
Values of overrides are parsed with `yaml.safe_load` and then coerced by the typed schema, so
`optim.lr=3e-4` is a float and `train.ema=null` removes a section.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from emocli.errors import EmoError, close_matches


def recipe_dir() -> Path:
    """$EMO_RECIPES, else the recipes a wheel ships (`emocli/shipped_recipes`, copied from the checkout's
    `recipes/` at build time, see setup.py), else `recipes/` of the checkout (editable install)."""
    env = os.environ.get("EMO_RECIPES")
    if env:
        return Path(env)
    shipped = Path(__file__).resolve().parents[1] / "shipped_recipes"
    return shipped if shipped.is_dir() else Path(__file__).resolve().parents[2] / "recipes"


def list_recipes() -> list[tuple[str, Path]]:
    root = recipe_dir()
    if not root.is_dir():
        return []
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p) for p in root.rglob("*.yaml"))


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in {".yaml", ".yml"}:
        raise EmoError(f"recipe file {str(path)!r} does not exist")
    names = dict(list_recipes())
    name = str(name_or_path)
    if name not in names:
        raise EmoError(
            f"unknown recipe {name!r}{close_matches(name, names)}; "
            f"`emo recipes list` shows the {len(names)} available"
        )
    return names[name]


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise EmoError(f"{path}:{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise EmoError(f"{path} must hold a mapping of recipe sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply `a.b=value` (set) and `~a.b` (delete) to a nested dict, in order."""
    for item in overrides:
        if item.startswith("~"):
            keys = _split_key(item[1:], item)
            parent = _walk(data, keys[:-1], item, create=False)
            if not isinstance(parent, dict) or keys[-1] not in parent:
                raise EmoError(f"override {item!r}: there is no key {'.'.join(keys)!r} to delete")
            del parent[keys[-1]]
            continue
        if "=" not in item:
            raise EmoError(f"override {item!r} must look like key.path=value or ~key.path")
        key, raw = item.split("=", 1)
        keys = _split_key(key, item)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parent = _walk(data, keys[:-1], item, create=True)
        parent[keys[-1]] = value
    return data


def _split_key(key: str, item: str) -> list[str]:
    keys = key.strip().split(".")
    if not all(keys):
        raise EmoError(f"override {item!r} has an empty key part")
    return keys


def _walk(data: dict, keys: list[str], item: str, create: bool):
    node: Any = data
    for k in keys:
        if not isinstance(node, dict):
            raise EmoError(f"override {item!r}: {k!r} is not inside a section")
        if k not in node or node[k] is None:
            if not create:
                return None
            node[k] = {}
        node = node[k]
    if not isinstance(node, dict):
        raise EmoError(f"override {item!r}: {'.'.join(keys)!r} is a value, not a section")
    return node


def load_recipe(source: str | os.PathLike | dict, overrides: Iterable[str] = (), expect_method: str | None = None):
    """Load a recipe by name, path or dict; apply overrides; validate; return the pydantic object."""
    from emocli.registry import get_method

    if isinstance(source, dict):
        data, origin = dict(source), "<recipe>"
    else:
        path = find_recipe(source)
        data, origin = read_yaml(path), str(path)
    data = apply_overrides(data, overrides)
    method = data.get("method")
    if method is None:
        raise EmoError(f"{origin} has no top-level `method:` key (it selects the recipe schema)")
    if expect_method is not None and method != expect_method:
        raise EmoError(f"{origin} is a {method!r} recipe, but this command runs {expect_method!r}")
    schema = get_method(method).load_schema()
    return validate(schema, data, origin)


def validate(schema, data: dict, origin: str):
    from pydantic import ValidationError

    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise EmoError(format_validation_error(e, schema, origin)) from None


def format_validation_error(error, schema, origin: str) -> str:
    """One line per recipe: every problem, each naming its key path and what is allowed."""
    problems = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc[:-1])
            problems.append(
                f"unknown key {key!r}{close_matches(loc[-1], allowed)}; allowed here: {', '.join(allowed)}"
            )
        elif err["type"] == "missing":
            problems.append(f"missing required key {key!r}")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) else f", got {got!r}"
            problems.append(f"{key}: {err['msg'].lower()}{got_text}")
    return f"{origin}: " + "; ".join(problems)


def _allowed_keys(schema, path: list[str]) -> list[str]:
    """Field names of the section at `path` (best effort through Optional/nested models)."""
    import typing

    from pydantic import BaseModel

    model = schema
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *typing.get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def dump_recipe(recipe) -> str:
    """The resolved recipe as YAML (every default filled in), in schema field order."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
