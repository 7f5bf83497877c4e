"""Recipes: YAML files validated by pydantic schemas, overridable with `key=value` (torch-free)."""

from emocli.recipes.load import find_recipe, list_recipes, load_recipe, recipe_dir  # noqa: F401
