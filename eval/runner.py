"""The evaluation run: plan rows × tasks, load each base once, evaluate, write results pair by pair.

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100

Layout of --out:
    pairs/<row>/<task>.json          one finished row×task (written last, atomically: the resume marker)
    predictions/<row>/<task>.jsonl   id, prompt hash, raw output, parsed answer, correct
    results.json / results.csv / results.md   rebuilt at the end of every run from the pairs above
A pair whose pairs/ file exists with the same fingerprint (data, prompt, limit, adapter weights, base,
precision, metric version) is not redone (--force redoes it), so a killed run loses at most one pair.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from eval import report
from eval.discovery import Adapter, Group, prompt_for, slugify
from eval.metrics import score_task
from eval.tasks import TaskData
from lora.fsutil import repo_relative, sha256_file, write_atomic, write_json_atomic
from lora.prompts import apply

EVAL_VERSION = 1  # bump when generation or metric rules change: finished pairs are then redone


@dataclass
class Settings:
    out: Path
    limit: int | None = None
    batch_size: int = 8
    base_quant: int | None = None
    no_base: bool = False
    prompt_format: str | None = None
    force: bool = False
    bertscore_model: str | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=list)


@dataclass
class Pair:
    """One cell of the table: a row (base or adapter) × a task, with the prompt it is evaluated with."""
    row: str
    task: str
    prompt_format: str
    template: str
    adapter: Adapter | None  # None: the base row
    base_row: str | None = None  # for adapters: the base row it is compared with


@dataclass
class Row:
    name: str
    kind: str  # "base" | "adapter"
    group: Group
    adapter: Adapter | None = None
    error: str | None = None
    results: dict = field(default_factory=dict)  # task -> pair result (or {"error": ...})


def plan_group(group: Group, datas: dict[str, TaskData], settings: Settings, many_groups: bool) -> tuple[list[Row], list[Pair]]:
    """Rows and pairs for one base model (pure). The base row is evaluated with the prompt the group's
    adapters use for that task; when they disagree, one base row per prompt format."""
    adapter_pairs: list[Pair] = []
    formats: dict[str, dict[str, str]] = {}  # task -> {format name: template} the base needs
    for a in group.adapters:
        for t, d in datas.items():
            name, template = prompt_for(a, d.task.prompt_format, settings.prompt_format)
            if a.error is None:
                formats.setdefault(t, {})[name] = template
            adapter_pairs.append(Pair(a.name, t, name, template, a))
    for t, d in datas.items():
        if t not in formats:  # no evaluable adapter: the base alone, with the default prompt
            name, template = prompt_for(None, d.task.prompt_format, settings.prompt_format)
            formats[t] = {name: template}
    all_formats = sorted({f for per in formats.values() for f in per})
    suffix = f" ({Path(group.base.ref).name})" if many_groups else ""

    def base_name(fmt: str) -> str:
        return "base" + (f" [{fmt}]" if len(all_formats) > 1 else "") + suffix

    rows: list[Row] = []
    pairs: list[Pair] = []
    if not settings.no_base:
        for fmt in all_formats:
            rows.append(Row(base_name(fmt), "base", group))
        for t, per in formats.items():
            for fmt, template in per.items():
                pairs.append(Pair(base_name(fmt), t, fmt, template, None))
    for a in group.adapters:
        rows.append(Row(a.name, "adapter", group, adapter=a, error=a.error))
    for p in adapter_pairs:
        if not settings.no_base:
            p.base_row = base_name(p.prompt_format)
        pairs.append(p)
    return rows, pairs


def fingerprint(pair: Pair, data: TaskData, group: Group, settings: Settings, weights_sha: str | None) -> dict:
    t = data.task
    return {
        "eval_version": EVAL_VERSION,
        "task": {"name": t.name, "kind": t.kind, "labels": list(data.labels or []), "max_new_tokens": t.max_new_tokens,
                 "data_sha256": data.sha256},
        "limit": settings.limit,
        "template": pair.template,
        "base": group.base.path,
        "base_quant": settings.base_quant,
        "adapter_weights_sha256": weights_sha,
        "bertscore_model": settings.bertscore_model if t.kind == "text" else None,
    }


def _weights_sha(adapter: Adapter) -> str | None:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (adapter.path / name).is_file():
            return sha256_file(adapter.path / name)
    return None


def pair_paths(out: Path, row: str, task: str) -> tuple[Path, Path]:
    return out / "pairs" / slugify(row) / f"{task}.json", out / "predictions" / slugify(row) / f"{task}.jsonl"


def load_finished(path: Path, fp: dict) -> dict | None:
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return done if done.get("fingerprint") == fp else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def evaluate_pair(model, tokenizer, pair: Pair, data: TaskData, settings: Settings, fp: dict) -> dict:
    """Generate, score, write predictions then the pair file (both atomic); return the pair result."""
    from tqdm import tqdm

    from eval.engine import generate

    task = data.task
    prompts = [apply(pair.template, r["context"]) for r in data.rows]
    bar = tqdm(total=len(prompts), desc=f"{pair.row} × {task.name}", unit="ex", file=sys.stderr,
               disable=not settings.progress, dynamic_ncols=True)
    try:
        outputs, stats = generate(model, tokenizer, prompts, task.max_new_tokens,
                                  stop_at_newline=task.kind in ("classification", "numeric"),
                                  batch_size=settings.batch_size, progress=bar)
    finally:
        bar.close()
    targets = [r["target"] for r in data.rows]
    metrics, per_row = score_task(task.kind, outputs, targets, list(data.labels) if data.labels else None)
    if task.kind == "text" and settings.bertscore_model:
        from eval.bertscore import bertscore

        f1s = bertscore(outputs, targets, settings.bertscore_model)
        metrics["bertscore_f1"] = sum(f1s) / len(f1s)
        from eval.metrics import bootstrap_mean

        metrics.setdefault("ci", {})["bertscore_f1"] = bootstrap_mean(f1s)
        for r, f in zip(per_row, f1s):
            r["bertscore_f1"] = f
    lines = []
    for r, prompt, out, detail in zip(data.rows, prompts, outputs, per_row):
        lines.append(json.dumps({
            "id": r["id"], "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
            "output": out, "target": r["target"], **detail,
        }, ensure_ascii=False))
    pair_file, pred_file = pair_paths(settings.out, pair.row, task.name)
    write_atomic(pred_file, "\n".join(lines) + "\n")
    result = {
        "row": pair.row, "task": task.name, "prompt_format": pair.prompt_format, "base_row": pair.base_row,
        "metrics": metrics,
        "timing": {"seconds": round(stats.seconds, 3), "samples_per_second": round(len(prompts) / stats.seconds, 3)
                   if stats.seconds > 0 else None, "new_tokens": stats.new_tokens},
        "truncated_prompts": stats.truncated_prompts,
        "predictions": pred_file.relative_to(settings.out).as_posix(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fp,
    }
    write_json_atomic(pair_file, result)  # last: its presence means the pair is finished
    return result


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "peft", "sklearn", "rouge_score"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - rouge_score has no __version__
            from importlib import metadata

            try:
                out[mod] = metadata.version({"sklearn": "scikit-learn", "rouge_score": "rouge-score"}.get(mod, mod))
            except metadata.PackageNotFoundError:
                out[mod] = None
    return out


def run(groups: list[Group], datas: dict[str, TaskData], settings: Settings) -> tuple[dict, int]:
    """Evaluate everything; returns (results.json content, number of error cells)."""
    t_start = time.monotonic()
    runnable = [g for g in groups if g.base.error is None]
    many = len([g for g in groups if g.adapters or g.base.error is None]) > 1
    all_rows: list[Row] = []
    group_facts: list[dict] = []
    for group in groups:
        rows, pairs = plan_group(group, datas, settings, many)
        all_rows.extend(rows)
        by_name = {r.name: r for r in rows}
        facts = {"base_model": group.base.ref, "base_path": group.base.path, "error": group.base.error,
                 "load_seconds": None, "dtype": None}
        group_facts.append(facts)
        if group.base.error:
            print(f"error: {group.base.error}; skipping {len(group.adapters)} adapter(s) of this group", file=sys.stderr)
            for r in rows:
                r.error = r.error or group.base.error
            continue
        # Which pairs still need a model? (finished ones are read back; error rows need nothing.)
        todo: list[tuple[Pair, dict]] = []
        sha_cache: dict[str, str | None] = {}
        for p in pairs:
            row = by_name[p.row]
            if row.error:
                continue
            sha = None
            if p.adapter is not None:
                if p.adapter.name not in sha_cache:
                    sha_cache[p.adapter.name] = _weights_sha(p.adapter)
                sha = sha_cache[p.adapter.name]
            fp = fingerprint(p, datas[p.task], group, settings, sha)
            pair_file, _ = pair_paths(settings.out, p.row, p.task)
            done = None if settings.force else load_finished(pair_file, fp)
            if done is not None:
                row.results[p.task] = done
            else:
                todo.append((p, fp))
        if not todo:
            continue
        from eval.engine import AdapterHost, load_base

        try:
            loaded = load_base(group.base.path, settings.base_quant)
        except Exception as exc:  # noqa: BLE001 - the group fails, the others go on
            msg = f"base model {group.base.ref} failed to load: {_first_line(exc)}"
            print(f"error: {msg}", file=sys.stderr)
            facts["error"] = msg
            for r in rows:
                r.error = r.error or msg
            continue
        facts["load_seconds"] = round(loaded.load_seconds, 3)
        facts["dtype"] = loaded.dtype
        host = AdapterHost(loaded)
        # Base pairs first, before any adapter is injected; then one adapter at a time, all its tasks.
        for p, fp in [x for x in todo if x[0].adapter is None]:
            try:
                model, ctx = host.model_for(None)
                with ctx:
                    by_name[p.row].results[p.task] = evaluate_pair(model, loaded.tokenizer, p, datas[p.task], settings, fp)
            except Exception as exc:  # noqa: BLE001 - one failed cell, the rest go on
                by_name[p.row].results[p.task] = {"error": f"evaluation failed: {_first_line(exc)}"}
                print(f"error: {p.row} × {p.task}: evaluation failed: {_first_line(exc)}", file=sys.stderr)
        by_adapter: dict[str, list[tuple[Pair, dict]]] = {}
        for p, fp in todo:
            if p.adapter is not None:
                by_adapter.setdefault(p.adapter.name, []).append((p, fp))
        for name, items in by_adapter.items():
            adapter = items[0][0].adapter
            try:
                host.attach(name, str(adapter.path))
            except Exception as exc:  # noqa: BLE001 - a broken adapter is one error row
                by_name[name].error = f"adapter failed to load: {_first_line(exc)}"
                print(f"error: {name}: {by_name[name].error}", file=sys.stderr)
                continue
            try:
                for p, fp in items:
                    try:
                        model, ctx = host.model_for(name)
                        with ctx:
                            by_name[name].results[p.task] = evaluate_pair(
                                model, loaded.tokenizer, p, datas[p.task], settings, fp)
                    except Exception as exc:  # noqa: BLE001 - one failed cell, the rest go on
                        by_name[name].results[p.task] = {"error": f"evaluation failed: {_first_line(exc)}"}
                        print(f"error: {name} × {p.task}: evaluation failed: {_first_line(exc)}", file=sys.stderr)
            finally:
                host.detach(name)
        del host, loaded
    results = report.build_results(all_rows, datas, group_facts, settings, versions(), time.monotonic() - t_start)
    errors = sum(1 for r in results["rows"] if r["error"]) + sum(
        1 for r in results["rows"] for v in r["results"].values() if "error" in v)
    return results, errors


def adapter_facts(a: Adapter | None) -> dict | None:
    if a is None:
        return None
    return {"path": repo_relative(a.path), "base_model": a.base_ref, "prompt_format": a.prompt_format,
            "run": a.run, "peft_type": a.config.get("peft_type"), "r": a.config.get("r"),
            "lora_alpha": a.config.get("lora_alpha"), "target_modules": a.config.get("target_modules")}
