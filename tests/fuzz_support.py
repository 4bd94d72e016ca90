"""What the fuzz files share: the example budget, file-tree snapshots, the refusal check, figures.

    FUZZ_EXAMPLES=2000 FUZZ_REPORT=/tmp/long.jsonl .venv/bin/python -m pytest -q -m fuzz tests/*/test_fuzz_*.py
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 200))


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")}


def check_refusal(err: str, context: object = None) -> None:
    """Exit 2's stderr: exactly one non-empty `error:` line, no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), (context, err)
    assert "Traceback" not in err


def report_figures(module: str, tried: Counter) -> None:
    """Every property of the module ran and tried inputs; FUZZ_REPORT=FILE appends the counts."""
    ran = {k: v for k, v in tried.items() if v and ", " not in k}
    if not ran:
        pytest.skip("run with the fuzz tests of this module")
    assert all(v >= min(EXAMPLES, 10) for v in ran.values()), ran
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"module": module, "examples": EXAMPLES, "tried": dict(tried)}) + "\n")
