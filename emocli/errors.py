"""User-facing errors: one line, a non-zero exit, no traceback (unless --debug)."""

from __future__ import annotations


class EmoError(Exception):
    """An error the user can fix: bad input, missing weights, a recipe that does not validate.

    The CLI prints `error: <message>` on one line and exits with `exit_code` (2 by default).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def close_matches(word: str, options, n: int = 3) -> str:
    """A short ' (did you mean ...?)' suffix, or '' when nothing is close."""
    import difflib

    found = difflib.get_close_matches(str(word), [str(o) for o in options], n=n, cutoff=0.6)
    return f" (did you mean {', '.join(repr(f) for f in found)}?)" if found else ""


def io_failed(error: OSError, path, doing: str, hint: str = "") -> EmoError:
    """One line for an OSError while writing (disk full, permissions, ...): the path, the cause, what now.

    E.g. "cannot write checkpoint runs/x/checkpoints/.step-4.tmp: No space left on device (ENOSPC); ...".
    """
    import errno

    where = getattr(error, "filename", None) or path
    reason = error.strerror or str(error) or type(error).__name__
    code = errno.errorcode.get(error.errno or -1)
    message = f"cannot {doing} {where}: {reason}" + (f" ({code})" if code else "")
    return EmoError(message + (f"; {hint}" if hint else ""), exit_code=1)
