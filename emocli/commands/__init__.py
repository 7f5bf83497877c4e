"""One thin module per command group: parse, load the recipe, call the method (lazily)."""
