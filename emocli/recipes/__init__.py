"""Recipes: YAML files validated by pydantic schemas, overridable with `key=value` (torch-free)."""

from emocli.recipes.load import load_recipe, recipe_dir, find_recipe, list_recipes  # noqa: F401
