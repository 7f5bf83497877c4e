"""Entry point of launched processes: `python -m emocli.worker RUN_DIR [--resume]`.

Reads only RUN_DIR/recipe.yaml (written by the parent) and runs the recipe's method.
"""

from __future__ import annotations

import sys


def run_method(run_dir, resume: bool) -> None:
    from emocli.registry import get_method
    from emocli.runs import Run

    run = Run.open(run_dir)
    get_method(run.recipe.method).load_entry()(run, resume=resume)


def main(argv: list[str] | None = None) -> int:
    from emocli import console
    from emocli.errors import EmoError

    console.start()  # --verbose reaches the worker as EMO_VERBOSE; log.txt is attached by setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in argv
    args = [a for a in argv if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m emocli.worker RUN_DIR [--resume]", file=sys.stderr)
        return 2
    try:
        run_method(args[0], resume)
    except EmoError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
