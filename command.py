"""How the project's scripts end (eval.py, plot.py): a mistake in a flag or an input is one line
on stderr, `error: ...`, and exit status 2; an interrupt (Ctrl-C) is one line saying what was
kept, and status 130; anything else is a bug and keeps its traceback. docs/failures.md lists the
statuses."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(main: Callable[[list[str] | None], object], argv: list[str] | None, interrupted: str) -> int:
    """main(argv), and the exit status of its end.

    Args:
        main: the script's entry point; it raises ValueError, with one sentence, for a mistake.
        argv: the arguments (None: sys.argv's).
        interrupted: the line printed on Ctrl-C, saying what is kept.
    Returns:
        0 when main returns, 2 after a ValueError, 130 after an interrupt."""
    try:
        main(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0
