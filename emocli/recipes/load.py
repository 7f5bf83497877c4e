"""Find, load, override and validate recipes.

Precedence: schema defaults < recipe file < `key=value` overrides < explicit CLI flags.
Values of overrides are parsed with `yaml.safe_load` and then read against the typed schema, so
`optim.lr=3e-4` is a float and `train.ema=null` removes a section, while a word YAML 1.1 reads as
a boolean or a number stays the typed text where the key takes text: `launch.mixed_precision=no`
is "no", `run.name=2024` is "2024".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from emocli.errors import EmoError, close_matches


def recipe_dir() -> Path:
    """`recipes/` of the checkout (editable install), or $EMO_RECIPES."""
    env = os.environ.get("EMO_RECIPES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "recipes"


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
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    method = data.get("method")
    if method is None:
        raise EmoError(f"{origin} has no top-level `method:` key (it selects the recipe schema)")
    if expect_method is not None and method != expect_method:
        raise EmoError(f"{origin} is a {method!r} recipe, but this command runs {expect_method!r}")
    schema = get_method(method).load_schema()
    _keep_text_where_schema_wants_text(schema, data, overrides)
    return validate(schema, data, origin)


def _keep_text_where_schema_wants_text(schema, data: dict, overrides: list[str]) -> None:
    """Undo YAML's reading of an override value as bool/int/float where the schema's field takes text only."""
    for item in overrides:
        if item.startswith("~") or "=" not in item:
            continue
        key, raw = item.split("=", 1)
        keys = key.strip().split(".")
        parent = _walk(data, keys[:-1], item, create=False)
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if value is None or isinstance(value, str) or not isinstance(value, (bool, int, float)):
            continue
        accepted = _accepted_scalars(_field_annotation(schema, keys))
        if raw in accepted["literals"]:
            parent[keys[-1]] = raw
        elif accepted["str"] and not _scalar_fits(value, accepted):
            parent[keys[-1]] = raw


def _scalar_fits(value, accepted: dict) -> bool:
    if isinstance(value, bool):
        return accepted["bool"]
    if isinstance(value, int):
        return accepted["int"] or accepted["float"]
    return accepted["float"]


def _field_annotation(schema, keys: list[str]):
    """The type annotation of the field at `keys` (through nested sections), or None when unknown."""
    import typing

    from pydantic import BaseModel

    model, annotation = schema, None
    for i, part in enumerate(keys):
        field = getattr(model, "model_fields", {}).get(part) if model is not None else None
        if field is None:
            return None
        annotation = field.annotation
        if i < len(keys) - 1:
            candidates = [annotation, *typing.get_args(annotation)]
            model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return annotation


def _accepted_scalars(annotation) -> dict:
    """Which scalar kinds a field annotation takes: str / bool / int / float, and its string literals."""
    import types
    import typing

    accepted = {"str": False, "bool": False, "int": False, "float": False, "literals": set()}
    stack = [annotation]
    while stack:
        a = stack.pop()
        origin = typing.get_origin(a)
        if origin is typing.Literal:
            for v in typing.get_args(a):
                if isinstance(v, str):
                    accepted["str"] = True
                    accepted["literals"].add(v)
                elif isinstance(v, bool):
                    accepted["bool"] = True
                elif isinstance(v, (int, float)):
                    accepted["int" if isinstance(v, int) else "float"] = True
        elif origin in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(a))
        elif a in (str, bool, int, float):
            accepted[a.__name__] = True
        elif a is typing.Any or a is None:
            accepted.update(str=False, bool=True, int=True, float=True)  # anything goes: keep YAML's reading
    return accepted


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
            if isinstance(got, bool):
                got_text += " (YAML reads unquoted yes/no/on/off as booleans: quote the word, e.g. \"no\")"
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
