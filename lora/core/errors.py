"""The one user-error type of the project (training CLI, data checks, eval): one line, exit code 2.

    python finetune.py no_such_run        # error: unknown run 'no_such_run'; ...   (exit 2)
    python -m eval --tasks nope           # error: unknown task nope ...            (exit 2)

Every entry point catches UserError, prints `error: <message>` on stderr and exits with exit_code,
having written nothing. A message is one line: `one_line` folds whatever a library said into one.
"""
from __future__ import annotations

import argparse
import difflib


class UserError(Exception):
    """Bad input from the user: the message is the whole story, printed as `error: <message>`."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(text: str, limit: int = 600) -> str:
    """Collapse line breaks (every kind Python splits on) into '; ' and cap the length."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    joined = "; ".join(parts)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """An exception as one line, for error rows and `error:` lines."""
    return one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))


def did_you_mean(word: str, choices, n: int = 3, cutoff: float = 0.6) -> str:
    """"; did you mean 'a' or 'b'?" for the close matches of word among choices, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as the project's: a UserError (one `error:` line, exit code 2, no usage block)."""

    def error(self, message: str):
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:  # a flag another verb takes, or a typo: say which command refused it
            raise UserError(f"{self.prog} does not take {unknown} (see {self.prog} --help)")
        raise UserError(f"{message} (see {self.prog} --help)")
