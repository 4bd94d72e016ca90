"""The one JSONL reader of the project: training data, eval test sets, prediction files, token counts.

    python finetune.py <name> --dry-run                       # checks every training row through here
    python -m eval score --task fpb --predictions p.jsonl     # reads predictions through here

Each non-blank line must be a JSON object whose `keys` are strings that survive UTF-8 (a lone
surrogate escape such as "\\ud800" is valid JSON but not text: axolotl's loader rejects it mid-launch,
so it is refused here). Every problem is one UserError naming the file and the line.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lora.core.errors import UserError
from lora.core.files import stat_kind


def check_readable_file(path: Path, what: str) -> None:
    kind = stat_kind(path, what)  # NUL bytes, over-long names: one line, not a traceback
    if kind == "missing":
        raise UserError(f"{what} {path} does not exist")
    if kind != "file":
        raise UserError(f"{what} {path} is not a file")


def is_text(value: str) -> bool:
    """False for a string holding a lone surrogate (valid JSON escape, not UTF-8 text)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_line(raw: bytes | str, where: str, keys: tuple[str, ...]) -> dict:
    """One line -> its object, or UserError(`where`: what is wrong)."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object (invalid JSON: {exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # digit limit, nesting depth
        raise UserError(f"{where}: not valid JSON here ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        shape = ", ".join(f'"{k}": str' for k in keys) or "…"
        raise UserError(f"{where}: expected an object {{{shape}}}, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise UserError(f"{where}: row has no {key!r} (rows are {{{', '.join(repr(k) for k in keys)}}})")
        if not isinstance(obj[key], str):
            raise UserError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
        if not is_text(obj[key]):
            raise UserError(f"{where}: {key!r} holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
    return obj


def read_jsonl(path: Path | str, keys: tuple[str, ...] = (), what: str = "file") -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line; UserError names file:line otherwise."""
    path = Path(path)
    check_readable_file(path, what)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            yield lineno, parse_line(raw, f"{path}:{lineno}", keys)
