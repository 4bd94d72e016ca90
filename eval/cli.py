"""Command line: evaluate adapters (default) or re-score a predictions file (`score`).

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100
    python -m eval lora_adapters/ --base-model models/base_model/smollm2-135m-instruct --tasks fpb,ner
    python -m eval --base-model models/base_model/smollm2-135m-instruct --tasks formula   # the base alone
    python -m eval score --task fpb --predictions eval_results/demo/predictions/<row>/fpb.jsonl
    python -m eval --list-tasks

Exit codes: 0 all rows evaluated; 1 finished but some rows/groups report errors (see results.md);
2 bad input (one `error:` line on stderr, nothing evaluated).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from eval.errors import InputError


def _tasks_arg(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from eval.engine import QUANT_CHOICES
    from lora.prompts import PROMPT_FORMATS

    p = argparse.ArgumentParser(
        prog="python -m eval",
        description="Evaluate LoRA adapters (folders with adapter_config.json, searched recursively) and their "
                    "base model on the finance test sets. `python -m eval score --help` re-scores a predictions file.",
    )
    p.add_argument("paths", nargs="*", help="adapter folders, or folders containing them (checkpoint-* skipped)")
    p.add_argument("--tasks", action="append", help="comma-separated task names (default: every task in the registry)")
    p.add_argument("--out", default="eval_results", help="output folder (default: eval_results)")
    p.add_argument("--limit", type=int, help="first N rows of each task (file order)")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument("--base-model", help="load this base for every adapter (a local folder or a cached hub id)")
    p.add_argument("--base-quant", type=int, choices=QUANT_CHOICES, help="load the base in 4/8-bit (bitsandbytes) or 16-bit")
    p.add_argument("--no-base", action="store_true", help="skip the base row")
    p.add_argument("--prompt-format", choices=sorted(PROMPT_FORMATS),
                   help="prompt for adapters without run.json (default: the task's, else finlora_inst)")
    p.add_argument("--tasks-json", help="another task registry (default: eval/tasks.json)")
    p.add_argument("--force", action="store_true", help="redo pairs already finished in --out")
    p.add_argument("--bertscore-model", help="local encoder folder: adds BERTScore F1 to text tasks (never downloads)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--dry-run", action="store_true", help="print the plan (groups, rows, prompts) and exit")
    p.add_argument("--list-tasks", action="store_true", help="print the task registry and exit")
    return p


def build_score_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval score",
        description='Score a predictions file (one {"output": ..., "target": ...} per line) with a task\'s metric; '
                    "prints the metrics as JSON. No model is loaded.",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help="JSONL file; eval's own predictions/<row>/<task>.jsonl works")
    p.add_argument("--tasks-json", help="another task registry (default: eval/tasks.json)")
    return p


def read_predictions(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise InputError(f"{path}: predictions file not found")
    outputs, targets = [], []
    from eval.tasks import read_jsonl_rows

    for _, obj in read_jsonl_rows(path, ("output", "target")):
        outputs.append(obj["output"])
        targets.append(obj["target"])
    if not outputs:
        raise InputError(f"{path}: no predictions")
    return outputs, targets


def score_main(argv: list[str]) -> int:
    from eval.metrics import parse_target_number, score_task
    from eval.tasks import load_registry, load_task_data, select_tasks

    args = build_score_parser().parse_args(argv)
    task = select_tasks(load_registry(args.tasks_json), [args.task])[0]
    outputs, targets = read_predictions(Path(args.predictions))
    labels = task.labels
    if task.kind == "classification" and labels is None:
        labels = load_task_data(task).labels  # the registry leaves the label set to the data
    for i, t in enumerate(targets, start=1):
        if task.kind == "classification" and t.strip().lower() not in labels:
            raise InputError(f"{args.predictions}:{i}: target {t!r} is not one of the labels {', '.join(labels)}")
        if task.kind == "numeric" and parse_target_number(t) is None:
            raise InputError(f"{args.predictions}:{i}: numeric target {t!r} is not a number")
    metrics, _ = score_task(task.kind, outputs, targets, list(labels) if labels else None)
    print(json.dumps({"task": task.name, "kind": task.kind, "headline": task.headline, **metrics}, indent=2))
    return 0


def run_main(argv: list[str]) -> int:
    from eval.tasks import load_registry, load_task_data, select_tasks

    parser = build_parser()
    args = parser.parse_args(argv)
    registry = load_registry(args.tasks_json)
    if args.list_tasks:
        for t in registry.values():
            labels = f" labels={','.join(t.labels)}" if t.labels else ""
            print(f"{t.name:14s} {t.kind:14s} headline={t.headline} max_new_tokens={t.max_new_tokens}{labels}  {t.data}")
        return 0
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be a positive integer")
    if args.batch_size < 1:
        raise InputError("--batch-size must be a positive integer")
    if not args.paths and not args.base_model:
        raise InputError("give adapter folders, or --base-model PATH to evaluate a base model alone")
    if args.bertscore_model and not Path(args.bertscore_model).is_dir():
        raise InputError(f"--bertscore-model {args.bertscore_model}: not a local folder (BERTScore never downloads)")
    tasks = select_tasks(registry, _tasks_arg(args.tasks))

    # Everything that can be wrong with the input is checked before a model loads.
    from eval.discovery import Group, discover, group_by_base, resolve_base

    datas = {}
    for t in tasks:
        d = load_task_data(t)
        if args.limit is not None:
            d = type(d)(task=d.task, rows=d.rows[: args.limit], labels=d.labels, sha256=d.sha256)
        datas[t.name] = d
    adapters = discover(args.paths) if args.paths else []
    groups = group_by_base(adapters, args.base_model) if adapters else [Group(resolve_base(args.base_model), [])]

    from eval.runner import Settings, plan_group, run

    settings = Settings(
        out=Path(args.out), limit=args.limit, batch_size=args.batch_size, base_quant=args.base_quant,
        no_base=args.no_base, prompt_format=args.prompt_format, force=args.force,
        bertscore_model=args.bertscore_model, progress=not args.no_progress, argv=["python", "-m", "eval", *argv],
    )
    if args.dry_run:
        for g in groups:
            state = g.base.path or g.base.error
            print(f"base {g.base.ref} -> {state}")
            rows, pairs = plan_group(g, datas, settings, len(groups) > 1)
            for r in rows:
                print(f"  {r.kind:7s} {r.name}" + (f"  ERROR: {r.error}" if r.error else ""))
            for p in pairs:
                print(f"    {p.row} × {p.task}: prompt {p.prompt_format}")
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only anyway
    results, errors = run(groups, datas, settings)

    from eval import report
    from lora.fsutil import write_atomic, write_json_atomic

    write_json_atomic(settings.out / "results.json", results)
    write_atomic(settings.out / "results.csv", report.to_csv(results))
    markdown = report.to_markdown(results)
    write_atomic(settings.out / "results.md", markdown)
    print(markdown)
    print(f"wrote {settings.out}/results.md, results.csv, results.json, predictions/", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "score":
            return score_main(argv[1:])
        return run_main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
