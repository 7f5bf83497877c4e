"""Build hook (the rest of the metadata is in pyproject.toml): a wheel carries the checkout's top-level
recipes/ as emocli/shipped_recipes/, so `pip install .` (not editable) finds every shipped recipe and
`emo recipes cp NAME DEST` copies one out. Editable installs read recipes/ in place."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithRecipes(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "recipes"
        target = Path(self.build_lib) / "emocli" / "shipped_recipes"
        for path in sorted(source.rglob("*.yaml")):
            dest = target / path.relative_to(source)
            self.mkpath(str(dest.parent))
            self.copy_file(str(path), str(dest))


setup(cmdclass={"build_py": BuildPyWithRecipes})
