"""results.json / results.csv / results.md from the evaluated rows (pure: data in, text out).

    python -m eval lora_adapters/ --out eval_results/all      # writes these three files and prints results.md
"""
from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from eval.kinds import KINDS
from eval.tasks import TaskData
from lora.core.compute import ComputeRecord, human_bytes
from lora.core.files import utc_now_iso, write_atomic, write_json_atomic


def build_results(rows, datas: dict[str, TaskData], group_facts: list[dict], settings, versions: dict,
                  seconds: float, compute: dict | None = None) -> dict:
    """rows: eval.run_plan.Row objects (name, kind, group, adapter, error, results); settings: run_plan.Settings.
    compute: lora.core.compute.ComputeRecord as JSON (what this run used; absent in results.json before it)."""
    tasks = {
        name: {"kind": d.task.kind.name, "headline": d.task.headline, "labels": list(d.labels) if d.labels else None,
               "data": str(d.task.data), "data_sha256": d.sha256, "n": len(d.rows),
               "max_new_tokens": d.task.max_new_tokens,
               "shots": settings.shot_plans[name].facts() if settings.shots and name in settings.shot_plans else None}
        for name, d in datas.items()
    }
    by_name = {r.name: r for r in rows}
    out_rows = []
    for r in rows:
        results = {}
        for task in datas:
            res = r.results.get(task)
            if res is None:
                continue
            res = dict(res)
            base = by_name.get(res.get("base_row") or "")
            headline = datas[task].task.headline
            if base is not None and task in base.results and "metrics" in res:
                b = base.results[task].get("metrics", {})
                if headline in b and headline in res["metrics"]:
                    res["delta_vs_base"] = res["metrics"][headline] - b[headline]
            results[task] = res
        out_rows.append({
            "name": r.name, "kind": r.kind, "base_model": r.group.base.ref, "base_path": r.group.base.path,
            "adapter": r.adapter.facts() if r.adapter is not None else None, "error": r.error, "results": results,
            "shots": r.shots, "tasks": list(r.tasks),
        })
    return {
        "schema": 1,
        "created": utc_now_iso(),
        "command": settings.argv,
        "settings": {"limit": settings.limit, "batch_size": settings.batch_size, "base_quant": settings.base_quant,
                     "no_base": settings.no_base, "prompt_format": settings.prompt_format,
                     "bertscore_model": settings.bertscore_model, "scoring": settings.scoring,
                     "task_selection": "per adapter (FinLoRA map)" if settings.per_adapter_tasks else "--tasks",
                     "shots": settings.shots, "shot_seed": settings.shot_seed, "merge_lora": settings.merge_lora},
        "versions": versions,
        "tasks": tasks,
        "groups": group_facts,
        "rows": out_rows,
        "timings": {"total_seconds": round(seconds, 3)},
        **({"compute": compute} if compute is not None else {}),
    }


def _metric_names(kind: str, metrics: dict) -> list[str]:
    names = list(KINDS[kind].metrics)
    if "bertscore_f1" in metrics:
        names.append("bertscore_f1")
    return names


def to_csv(results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "kind", "base_model", "task", "metric", "value", "ci_low", "ci_high", "delta_vs_base",
                "headline", "n", "prompt_format", "error"])
    for r in results["rows"]:
        if r["error"]:
            w.writerow([r["name"], r["kind"], r["base_model"], "", "", "", "", "", "", "", "", "", r["error"]])
            continue
        for task, res in r["results"].items():
            info = results["tasks"][task]
            if "error" in res:
                w.writerow([r["name"], r["kind"], r["base_model"], task, "", "", "", "", "", "", "", "", res["error"]])
                continue
            m = res["metrics"]
            for name in _metric_names(info["kind"], m):
                if name not in m:
                    continue
                lo, hi = m.get("ci", {}).get(name, [None, None])
                is_headline = name == info["headline"]
                delta = res.get("delta_vs_base") if is_headline else None
                w.writerow([r["name"], r["kind"], r["base_model"], task, name, _num(m[name]), _num(lo), _num(hi),
                            _num(delta), int(is_headline), m["n"], res["prompt_format"], ""])
    return buf.getvalue()


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6f}" if isinstance(x, float) else str(x)


def _cell(res: dict | None, headline: str) -> str:
    if res is None:
        return "–"
    if "error" in res:
        return "error"
    m = res["metrics"]
    if headline not in m:
        return "–"
    text = f"{m[headline]:.3f}"
    ci = m.get("ci", {}).get(headline)
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if res.get("delta_vs_base") is not None:
        text += f" Δ {res['delta_vs_base']:+.3f}"
    return text


def md_escape(text: str) -> str:
    """Text as one Markdown table cell: no column break, no line break."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(results: dict) -> str:
    tasks = results["tasks"]
    lines = ["# Evaluation results", ""]
    heads = ", ".join(f"{t}: {i['headline']}" for t, i in tasks.items())
    s = results["settings"]
    lines.append(f"Headline metric per task ({heads}), 95% bootstrap interval in brackets, "
                 "Δ = difference from the base row with the same prompt.")
    dtypes = sorted({g["dtype"] for g in results["groups"] if g.get("dtype")})
    merges = [v["lora_merge"]["merged"] for r in results["rows"] for v in r["results"].values() if "lora_merge" in v]
    lines.append(f"limit: {s['limit'] or 'all'} rows per task; base precision: "
                 f"{s['base_quant'] or ', '.join(dtypes) or 'full'}; batch size {s['batch_size']}"
                 + (f"; adapters on merged weights: {sum(merges)} of {len(merges)} pairs (--merge-lora "
                    f"{s.get('merge_lora', 'auto')}; each pair's lora_merge in results.json says why)" if merges else "")
                 + ".")
    lines.append(_scoring_line(s))
    lines.append("")
    lines.append("| model | " + " | ".join(f"{t} ({i['headline']}, n={_n_used(results, t)})" for t, i in tasks.items()) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    errors = []
    for r in results["rows"]:
        if r["error"]:
            cells = ["error"] * len(tasks)
            errors.append(f"- **{md_escape(r['name'])}**: {md_escape(r['error'])}")
        else:
            cells = [_cell(r["results"].get(t), i["headline"]) for t, i in tasks.items()]
            for t, res in r["results"].items():
                if "error" in res:
                    errors.append(f"- **{md_escape(r['name'])}** × {t}: {md_escape(res['error'])}")
        lines.append(f"| {md_escape(r['name'])} | " + " | ".join(cells) + " |")
    if errors:
        lines += ["", "Errors:", *errors]
    notes = _selection_notes(results)
    if notes:
        lines += ["", "Notes:", *notes]
    detail = []
    for r in results["rows"]:
        for t, res in r["results"].items():
            if "metrics" not in res:
                continue
            m = res["metrics"]
            shown = ", ".join(f"{k} {m[k]:.3f}" for k in _metric_names(tasks[t]["kind"], m) if k in m)
            if "unparsed" in m:
                shown += f", unparsed {m['unparsed']}"
            sps = res.get("timing", {}).get("samples_per_second")
            detail.append(f"| {md_escape(r['name'])} | {t} | {res['prompt_format']} | {m['n']} | {shown} | "
                          f"{sps if sps is not None else '–'} |")
    if detail:
        lines += ["", "| model | task | prompt | n | metrics | samples/s |", "|---|---|---|---|---|---|", *detail]
    lines += _compute_lines(results.get("compute"))
    return "\n".join(lines) + "\n"


def _compute_lines(rec: dict | None) -> list[str]:
    """What the run used, per phase (lora/core/compute.py); nothing for a results.json written before it."""
    if not rec:
        return []
    from pydantic import ValidationError


    try:
        c = ComputeRecord.model_validate(rec)
    except ValidationError as exc:  # an edited results.json: the tables above still render
        return ["", f"Compute: not shown, results.json \"compute\" is malformed ({exc.error_count()} problem(s))."]
    gpu = c.total.peak_gpu_memory_bytes is not None

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.0f}%"

    head = "| phase | wall s | peak RSS | CPU (of {} cores) |".format(c.cpu_count) + (" GPU memory | GPU busy |" if gpu else "")
    lines = ["", f"Compute (process tree sampled every {c.interval_seconds:g} s"
             + (f"; GPU: {', '.join(c.gpus)}" if c.gpus else "; no GPU") + "; resumed pairs are not re-run, so not counted):",
             "", head, "|---|---|---|---|" + ("---|---|" if gpu else "")]
    for p in [*c.phases, c.total]:
        cells = [md_escape(p.name), f"{p.wall_seconds:.1f}", human_bytes(p.peak_rss_bytes), pct(p.cpu_percent)]
        if gpu:
            cells += [human_bytes(p.peak_gpu_memory_bytes), pct(p.gpu_util_percent)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scoring_line(settings: dict) -> str:
    """Which rules made the numbers, and which encoder a BERTScore came from (FinLoRA's is ProsusAI/finbert)."""
    scoring = settings.get("scoring", "standard")
    rules = ("FinLoRA's harness rules (raw prompt, text after the last \"Answer:\", earliest target as a substring, "
             "f1_finlora = its weighted F1 over raw outputs)" if scoring == "finlora" else
             "standard rules (docs/eval.md, Metrics)")
    encoder = settings.get("bertscore_model")
    free_text = (f"BERTScore F1 from the local encoder {encoder}" if encoder else
                 "ROUGE (no --bertscore-model given, so no BERTScore)")
    return f"Scoring: {scoring} — {rules}; free-text tasks: {free_text}."


def _selection_notes(results: dict) -> list[str]:
    """Which tasks rows were evaluated on (when not every row × every task) and how the base got its shots."""
    s = results["settings"]
    notes = []
    if s.get("task_selection", "--tasks") != "--tasks":
        notes.append("- Each adapter is evaluated on its own tasks (FinLoRA's map, eval/adapter_tasks.py); "
                     "the base row on the union of its adapters' tasks; – = not evaluated.")
        for r in results["rows"]:
            a = r.get("adapter") or {}
            if r["kind"] == "adapter" and not r["error"] and a.get("task_family_source") and not a.get("task_family"):
                notes.append(f"- **{md_escape(r['name'])}**: task family unknown ({md_escape(a['task_family_source'])}): "
                             "evaluated on every task present")
    if s.get("shots"):
        notes.append(f"- Base rows are {s['shots']}-shot (FinLoRA's few-shot prompt; examples seeded per row, seed "
                     f"{s['shot_seed']}); adapters are zero-shot.")
        for t, info in results["tasks"].items():
            sh = info.get("shots")
            if sh and sh["source"] == "test":
                dup = f" (nor on rows {sh['duplicate_ids']}, which repeat them)" if sh.get("duplicate_ids") else ""
                notes.append(f"- {t}: no train file, so test rows {sh['held_out_ids']} are the examples and no row is "
                             f"scored on them{dup}")
    return notes


def _n_used(results: dict, task: str) -> int:
    for r in results["rows"]:
        res = r["results"].get(task)
        if res and "metrics" in res:
            return res["metrics"]["n"]
    return min(results["tasks"][task]["n"], results["settings"]["limit"] or results["tasks"][task]["n"])


def write_results(results: dict, out: Path) -> None:
    write_json_atomic(out / "results.json", results)
    write_atomic(out / "results.csv", to_csv(results))
    markdown = to_markdown(results)
    write_atomic(out / "results.md", markdown)
    print(markdown)
    print(f"wrote {out}/results.md, results.csv, results.json, predictions/", file=sys.stderr)
