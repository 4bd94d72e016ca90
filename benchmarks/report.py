"""The common end of a benchmark script: print its JSON summary, write it with --json, keep or remove its work folder."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def finish(summary: dict, json_path: str | None, work: Path, keep: bool) -> int:
    from lora.core.files import write_json_atomic

    print(json.dumps(summary, indent=2))
    if json_path:
        write_json_atomic(Path(json_path), summary)
    if keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0
