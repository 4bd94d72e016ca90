"""A queue's evaluation, the pure part: the `python -m eval` argv for its runs, and each run's metrics read back.

    python finetune.py --queue a b c --eval end      # one `python -m eval` over every run at the end

lora/pod/queue.py (Runner.evaluate) runs the child and records what eval_state says in queue.json.
"""
from __future__ import annotations

import sys

from lora.pod.queue_state import EvalState, Metric


def eval_argv(adapter_dirs: list[str], out: str, limit: int | None) -> list[str]:
    argv = [sys.executable, "-m", "eval", *adapter_dirs, "--out", out, "--no-progress"]
    return argv + (["--limit", str(limit)] if limit is not None else [])


def metrics_by_run(results: dict, dirs: dict[str, str]) -> dict[str, dict]:
    """run name -> {"error": …} or {"metrics": {task: Metric}} from eval's results.json; a row is matched
    by its adapter's path (repo-relative), else by its name."""
    by_path = {v: k for k, v in dirs.items()}
    out: dict[str, dict] = {}
    for row in results.get("rows", []):
        if row.get("kind") != "adapter":
            continue
        path = (row.get("adapter") or {}).get("path")
        name = by_path.get(path) or (row.get("name") if row.get("name") in dirs else None)
        if name is None:
            continue
        if row.get("error"):
            out[name] = {"error": row["error"]}
            continue
        metrics = {}
        for task, res in row.get("results", {}).items():
            headline = results["tasks"][task]["headline"]
            if "error" in res:
                metrics[task] = Metric(metric=headline, error=res["error"])
                continue
            m = res["metrics"]
            low, high = (m.get("ci") or {}).get(headline) or (None, None)
            metrics[task] = Metric(metric=headline, value=m.get(headline), low=low, high=high, n=m.get("n"))
        out[name] = {"metrics": metrics}
    return out


def eval_state(returncode: int, out: str, found: dict | None) -> EvalState:
    if found is None:
        why = (f"python -m eval exited {returncode} without a row for this adapter"
               + (" (bad input: its error line is in the log above)" if returncode == 2 else ""))
        return EvalState(status="failed", exit_code=returncode, out=out, error=why)
    if "error" in found:
        return EvalState(status="failed", exit_code=returncode, out=out, error=found["error"])
    failed = any(m.error for m in found["metrics"].values())
    return EvalState(status="failed" if failed else "complete", exit_code=returncode, out=out,
                     metrics=found["metrics"], error="a task reports an error (see eval/results.md)" if failed else None)

