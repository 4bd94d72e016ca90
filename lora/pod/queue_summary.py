"""The queue's one table: summary.md / summary.csv / summary.json (+ summary.png for a sweep).

    python finetune.py --queue a b c          # written after every run; printed when the queue ends
    python finetune.py --queue a b c          # again, on a finished queue: prints the table, trains nothing

Per run: status, steps, wall time, GPU-hours (wall time x GPUs; none on the cpu profile), cost at the
profile's price (or --usd-per-gpu-hour), and each task's headline metric with its 95% bootstrap interval
as eval's results.json reports it. A sweep adds one column per swept key and a PNG of each task's
metric against the swept values. Pure (state in, text/bytes out) except `write_summary`.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from eval.plots import plain
from lora.core.files import utc_now_iso, write_atomic, write_json_atomic
from lora.pod.queue_state import Metric, QueueState, RunState

OUTPUTS = ("summary.md", "summary.csv", "summary.json")
PNG = "summary.png"


def gpu_hours(run: RunState) -> float | None:
    if run.accelerator != "cuda" or not run.workers:
        return None
    return run.wall_seconds / 3600 * run.workers


def cost_usd(run: RunState) -> float | None:
    hours = gpu_hours(run)
    return None if hours is None or run.usd_per_gpu_hour is None else hours * run.usd_per_gpu_hour


def task_names(state: QueueState) -> list[str]:
    seen: dict[str, None] = {}
    for r in state.runs:
        for t in r.eval.metrics:
            seen.setdefault(t, None)
    return list(seen)


def build_summary(state: QueueState) -> dict:
    """summary.json: the rows of the table as data, with totals and provenance."""
    rows = []
    for r in state.runs:
        rows.append({
            "name": r.name, "status": r.status, "swept": r.swept, "steps": r.steps, "planned_steps": r.planned_steps,
            "wall_seconds": round(r.wall_seconds, 1), "gpu_hours": _round(gpu_hours(r), 4),
            "cost_usd": _round(cost_usd(r), 4), "planned_hours": r.planned_hours,
            "planned_cost_usd": r.planned_cost_usd, "exit_code": r.exit_code, "error": r.error,
            "eval": {"status": "not asked" if state.eval_mode == "none" and r.eval.status == "pending"
                     else r.eval.status, "exit_code": r.eval.exit_code, "out": r.eval.out,
                     "error": r.eval.error},
            "metrics": {t: m.model_dump(mode="json") for t, m in r.eval.metrics.items()},
        })
    costs = [c for c in (cost_usd(r) for r in state.runs) if c is not None]
    hours = [h for h in (gpu_hours(r) for r in state.runs) if h is not None]
    return {
        "schema": 1, "queue": state.name, "generated": utc_now_iso(), "command": state.command,
        "registry": state.registry, "outcome": state.outcome, "sweep_base": state.sweep_base,
        "sweep_keys": state.sweep_keys,
        "on_finish": state.on_finish.model_dump(mode="json") if state.on_finish else None,
        "totals": {"runs": len(rows), "complete": sum(r.status == "complete" for r in state.runs),
                   "failed": sum(r.status == "failed" for r in state.runs),
                   "wall_seconds": round(sum(r.wall_seconds for r in state.runs), 1),
                   "gpu_hours": round(sum(hours), 4) if hours else None,
                   "cost_usd": round(sum(costs), 4) if costs else None},
        "tasks": task_names(state), "rows": rows,
    }


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def metric_cell(m: Metric | dict | None) -> str:
    if m is None:
        return "–"
    m = m if isinstance(m, Metric) else Metric.model_validate(m)
    if m.error or m.value is None:
        return "error"
    text = f"{m.value:.3f}"
    if m.low is not None and m.high is not None:
        text += f" [{m.low:.3f}, {m.high:.3f}]"
    return text


def _money(x: float | None) -> str:
    return "–" if x is None else f"${x:.2f}"


def _steps(row: dict) -> str:
    return "–" if row["steps"] is None else str(row["steps"])


def to_markdown(summary: dict) -> str:
    from eval.report import md_escape  # here, not at the top: finetune.py imports this module, eval pulls in numpy

    tasks, keys = summary["tasks"], summary["sweep_keys"]
    lines = [f"# Queue {summary['queue']}: {summary['outcome'] or 'in progress'}", "",
             f"Made by `{' '.join(summary['command'])}` at {summary['generated']} from {summary['registry']}.",
             "Headline metric per task (eval's results.json), 95% bootstrap interval in brackets; GPU-hours = wall "
             "time x GPUs (none for CPU runs); cost at the profile's price (or --usd-per-gpu-hour).", ""]
    head = ["run", "status", *keys, "steps", "wall", "GPU-h", "cost", "eval", *tasks]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in summary["rows"]:
        hours = "–" if row["gpu_hours"] is None else f"{row['gpu_hours']:.3f}"
        cells = [md_escape(row["name"]), row["status"], *(md_escape(json.dumps(row["swept"].get(k))) for k in keys),
                 _steps(row), duration(row["wall_seconds"]), hours, _money(row["cost_usd"]), row["eval"]["status"],
                 *(metric_cell(row["metrics"].get(t)) for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    t = summary["totals"]
    total_hours = "–" if t["gpu_hours"] is None else f"{t['gpu_hours']:.3f}"
    lines += ["", f"{t['complete']}/{t['runs']} complete, {t['failed']} failed; wall {duration(t['wall_seconds'])}, "
                  f"GPU-hours {total_hours}, cost {_money(t['cost_usd'])}."]
    problems = [f"- **{md_escape(r['name'])}**: {md_escape(r['error'])}" for r in summary["rows"] if r["error"]]
    problems += [f"- **{md_escape(r['name'])}** eval: {md_escape(r['eval']['error'])}"
                 for r in summary["rows"] if r["eval"]["error"]]
    if problems:
        lines += ["", "Problems:", *problems]
    of = summary["on_finish"]
    if of:
        lines += ["", f"--on-finish `{' '.join(of['argv'])}`: exit code {of['exit_code']}"
                      + (f" ({md_escape(of['error'])})" if of.get("error") else "")]
    return "\n".join(lines) + "\n"


def to_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = summary["sweep_keys"]
    w.writerow(["run", "status", *keys, "steps", "wall_seconds", "gpu_hours", "cost_usd", "eval_status", "task",
                "metric", "value", "ci_low", "ci_high", "n", "error"])
    for row in summary["rows"]:
        first = [row["name"], row["status"], *(json.dumps(row["swept"].get(k)) for k in keys), _num(row["steps"]),
                 _num(row["wall_seconds"]), _num(row["gpu_hours"]), _num(row["cost_usd"]), row["eval"]["status"]]
        if not row["metrics"]:
            w.writerow([*first, "", "", "", "", "", "", row["error"] or row["eval"]["error"] or ""])
        for task, m in row["metrics"].items():
            w.writerow([*first, task, m["metric"], _num(m["value"]), _num(m["low"]), _num(m["high"]), _num(m["n"]),
                        m["error"] or ""])
    return buf.getvalue()


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def sweep_png(summary: dict) -> bytes | None:
    """One panel per task: headline metric (95% interval) against the swept values; None without both."""
    keys, tasks = summary["sweep_keys"], summary["tasks"]
    if not keys or not tasks:
        return None
    import matplotlib


    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    labels = [", ".join(f"{k}={json.dumps(r['swept'].get(k))}" for k in keys) if len(keys) > 1
              else json.dumps(r["swept"].get(keys[0])) for r in rows]
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 0.7 * len(rows) + 2) * len(tasks), 3.8), dpi=100,
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=True):
        metric = ""
        for x, row in enumerate(rows):
            m = row["metrics"].get(task)
            if not m or m["value"] is None:
                continue
            metric = m["metric"]
            if m["low"] is not None and m["high"] is not None:
                ax.errorbar([x], [m["value"]], yerr=[[max(m["value"] - m["low"], 0)], [max(m["high"] - m["value"], 0)]],
                            fmt="o", capsize=4, color="#1f77b4")
            else:
                ax.plot([x], [m["value"]], "o", color="#1f77b4")
        values = [v for r in rows for v in _points(r["metrics"].get(task))]
        if values and all(0 <= v <= 1 for v in values):
            ax.set_ylim(-0.03, 1.03)  # a 0-1 score on its whole scale: panels compare at a glance
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([plain(label) for label in labels], rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(plain(" x ".join(keys)), fontsize=8)
        ax.set_title(plain(f"{task}: {metric}"), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    command = " ".join(summary["command"])
    fig.suptitle(plain(f"sweep of {summary['sweep_base']} (95% intervals)"), fontsize=10)
    fig.text(0.01, 0.005, plain(command), fontsize=6, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.93))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Description": command, "Software": "python finetune.py --sweep"})
    plt.close(fig)
    return buf.getvalue()


def _points(m: dict | None) -> list[float]:
    return [] if not m else [v for v in (m["value"], m["low"], m["high"]) if v is not None]


def write_summary(folder: Path, state: QueueState) -> str:
    """Write the files atomically; return the Markdown table."""
    summary = build_summary(state)
    markdown = to_markdown(summary)
    write_atomic(folder / "summary.md", markdown)
    write_atomic(folder / "summary.csv", to_csv(summary))
    write_json_atomic(folder / "summary.json", summary)
    png = sweep_png(summary)
    if png is not None:
        write_atomic(folder / PNG, png)
    return markdown
