"""Training-data checks: every dataset is JSONL with a string `context` and a non-empty `target`.

Run before anything is rendered or launched, so a bad file costs one line and no GPU time:
the message names the file and the line number.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora.registry import UserError


def check_jsonl(path: Path, what: str = "dataset") -> int:
    """Return the row count; raise UserError naming the file and line for the first bad row."""
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    if path.suffix not in (".jsonl", ".json"):
        raise UserError(f"{what} {path} is not JSONL (one JSON object per line, .jsonl)")
    rows = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{path}:{lineno}: not a JSON object ({exc})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected an object with context and target")
            for key in ("context", "target"):
                if key not in row:
                    raise UserError(f"{path}:{lineno}: row has no {key!r} (FinLoRA rows are {{\"context\", \"target\"}})")
                if not isinstance(row[key], str):
                    raise UserError(f"{path}:{lineno}: {key!r} must be a string")
            if not row["target"].strip():
                raise UserError(f"{path}:{lineno}: empty 'target'")
            rows += 1
    if rows == 0:
        raise UserError(f"{what} {path} is empty")
    return rows
