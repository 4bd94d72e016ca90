"""Errors the CLI turns into one line on stderr and exit code 2 (bad input, nothing evaluated)."""
from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: the message is the whole story, printed as `error: <message>`."""
