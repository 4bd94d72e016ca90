"""Training-data checks: every dataset is JSONL with a string `context` and a non-empty `target`.

    python finetune.py <name> --dry-run      # checks every row of the entry's datasets first

Run before anything is rendered or launched, so a bad file costs one line and no GPU time:
the message names the file and the line number (lora/core/jsonl.py reads every file of the project).
"""
from __future__ import annotations

from pathlib import Path

from lora.core.errors import UserError
from lora.core.jsonl import check_readable_file, read_jsonl


def check_jsonl(path: Path, what: str = "dataset") -> int:
    """Return the row count; raise UserError naming the file and line for the first bad row."""
    check_readable_file(path, what)
    if path.suffix not in (".jsonl", ".json"):
        raise UserError(f"{what} {path} is not JSONL (one JSON object per line, .jsonl)")
    rows = 0
    for lineno, row in read_jsonl(path, ("context", "target"), what):
        if not row["target"].strip():
            raise UserError(f"{path}:{lineno}: empty 'target'")
        rows += 1
    if rows == 0:
        raise UserError(f"{what} {path} is empty")
    return rows
