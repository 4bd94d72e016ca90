"""Names that become file names: run names (recipes/<name>.yaml, lora_adapters/<name>/) and task names
(predictions/<row>/<task>.jsonl). One rule for all of them, checked before any path is built.

    python finetune.py ../x          # error: run name '../x': use letters, digits, '_', '-', '.' ...

A safe name starts with a letter or digit, holds only letters, digits, '_', '-' and '.', has no '..',
and is at most MAX_NAME_LEN characters, so `<name>.old-<time>` and `.<name>.yaml.<random>.tmp` stay
under the file-system limit of 255 bytes.
"""
from __future__ import annotations

import re

from lora.core.errors import UserError

MAX_NAME_LEN = 120
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a file name here, or None when it can."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME_LEN:
        return f"is {len(name)} characters long; at most {MAX_NAME_LEN}"
    if not _SAFE.fullmatch(name) or ".." in name:
        return "use letters, digits, '_', '-' and '.' (starting with a letter or digit, no '..'): it becomes a file name"
    return None


def check_name(name: object, what: str) -> str:
    """`name` unchanged when safe; UserError naming `what` (e.g. "run name") otherwise."""
    problem = name_problem(name)
    if problem:
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise UserError(f"{what} {shown}: {problem}")
    return name
