"""The GPU pod check's report: $OUT/gpu_pod_check.json, gpu_pod_check.md and logs.txt, rewritten after every step.

    python benchmarks/gpu_pod_check.py --cpu-smoke --out /tmp/pod-smoke && cat /tmp/pod-smoke/gpu_pod_check.md

Pure but for write_report: the report dict in, its markdown out.
"""
from __future__ import annotations

import json
from pathlib import Path


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- the report


def _eval_line(e: dict) -> str:
    took = []
    if e.get("seconds"):
        took.append(f"{e['seconds']} s")
    if e.get("adapter_generate_seconds"):
        took.append(f"adapters generating {e['adapter_generate_seconds']} s")
    line = f"Eval, --merge-lora {e.get('merge_lora', 'off')}: {e.get('status')}"
    return line + (f" ({', '.join(took)})" if took else "") + (f"; {e['note']}" if e.get("note") else "")


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    lines = [f"# GPU pod check ({report['started']}, {report['mode']})", "",
             f"Command: `{report['command']}`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpus" and v),
             "", "GPUs: " + ("; ".join(env.get("gpus") or []) or "none"), "",
             f"Model: {report.get('model', '(not built yet)')}", "",
             "| variant | status | s | tokens/s (packed) | samples/s | peak GPU MiB (nvidia-smi) | plan peak GiB | "
             "measured / plan | train loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    results = report.get("results") or []
    for r in results:
        ratio = (f"{r['peak_gpu_mib'] / 1024 / r['plan_peak_gib']:.2f}"
                 if r.get("peak_gpu_mib") and r.get("plan_peak_gib") else "")
        cells = [r["variant"], r["status"], r.get("seconds"), r.get("tokens_per_second"),
                 r.get("samples_per_second"), r.get("peak_gpu_mib"), r.get("plan_peak_gib"), ratio,
                 r.get("train_loss")]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    evals = {"eval": report.get("eval") or {}, "eval_merged": report.get("eval_merged") or {}}
    if not evals["eval"]:
        lines += ["", "Eval: not reached (the run was stopped or is still going)"]
    lines += [""] + [_eval_line(e) for e in evals.values() if e]
    same = report.get("merge_comparison")
    if same:
        lines += ["", f"Merged vs unmerged: {same['same_output']}/{same['rows']} adapter answers identical"]
    if evals["eval"].get("results_md"):
        lines += ["", evals["eval"]["results_md"]]
    failures = [r for r in results if r.get("error_tail")] + \
        [{"variant": name, **e} for name, e in evals.items() if e.get("error_tail")]
    if (report.get("install") or {}).get("error_tail"):
        failures.insert(0, {"variant": "install", **report["install"]})
    probe = report.get("import_probe") or {}
    if probe.get("error_tail"):
        failures.insert(0, {"variant": f"import (missing: {probe.get('missing')})", "error_tail": probe["error_tail"]})
    if failures:
        lines += ["", "## Failures", ""]
        for f in failures:
            lines += [f"### {f['variant']}", "", "```", f["error_tail"], "```", ""]
    skipped = [f"{r['variant']} ({r['note']})" for r in results if r["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped: " + ", ".join(skipped)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, out: Path, logs: Path | None = None, log_lines: int = 200) -> None:
    """gpu_pod_check.json and .md, and logs.txt (the last lines of every log): three files, since the device
    tool brings back at most 8 from $OUT and none deeper than two folders."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_pod_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_pod_check.md").write_text(markdown(report), encoding="utf-8")
    if logs is not None and logs.is_dir():
        parts = [f"===== {f.name} (last {log_lines} lines)\n{tail(f.read_text(encoding='utf-8'), log_lines)}\n"
                 for f in sorted(logs.glob("*.log"))]
        (out / "logs.txt").write_text("\n".join(parts), encoding="utf-8")
