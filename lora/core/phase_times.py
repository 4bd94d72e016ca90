"""Time the phases of a multi-step command (`make demo`) and print them as its last lines. Standard library
only: it runs with the system python3 before the virtual environment exists.

    python3 -m lora.core.phase_times eval_results/demo/phases.json start
    python3 -m lora.core.phase_times eval_results/demo/phases.json run install -- make .venv/.installed
    python3 -m lora.core.phase_times eval_results/demo/phases.json report

`run` starts the command as an argv (no shell), waits, records {name, seconds, exit_code} in the file
(rewritten atomically) and exits with the command's own code; a failed phase prints the table so far.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lora.core.files import write_json_atomic


def read_phases(path: Path) -> list[dict]:
    try:
        phases = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return phases if isinstance(phases, list) else []


def format_table(phases: list[dict]) -> str:
    """The phases, one line each, and their total: what `make demo` prints last."""
    width = max([len(p["name"]) for p in phases] + [len("total")])
    lines = ["phases (wall clock):"]
    for p in phases:
        failed = "" if p["exit_code"] == 0 else f"  FAILED (exit code {p['exit_code']})"
        lines.append(f"  {p['name']:<{width}}  {format_seconds(p['seconds'])}{failed}")
    lines.append(f"  {'total':<{width}}  {format_seconds(sum(p['seconds'] for p in phases))}")
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{seconds:7.1f} s" + (f"  ({int(minutes)} min {rest:02.0f} s)" if minutes else "")


def run_phase(path: Path, name: str, argv: list[str]) -> int:
    t0 = time.monotonic()
    try:
        code = subprocess.run(argv, check=False).returncode
    except OSError as exc:  # the command does not exist: one line, like any bad input
        print(f"error: phase {name}: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        code = 127
    phases = [p for p in read_phases(path) if p.get("name") != name]
    phases.append({"name": name, "seconds": round(time.monotonic() - t0, 3), "exit_code": code})
    write_json_atomic(path, phases)
    if code != 0:
        print(format_table(phases), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python3 -m lora.core.phase_times FILE start | run NAME -- COMMAND... | report"
    if len(args) < 2:
        print(usage, file=sys.stderr)
        return 2
    path, action = Path(args[0]), args[1]
    if action == "start" and len(args) == 2:
        write_json_atomic(path, [])
        return 0
    if action == "report" and len(args) == 2:
        phases = read_phases(path)
        print(format_table(phases) if phases else f"no phases recorded in {path}")
        return 0
    if action == "run" and len(args) >= 5 and args[3] == "--":
        return run_phase(path, args[2], args[4:])
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
