"""Command line: evaluate adapters (default) or re-score a predictions file (`score`).

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100
    python -m eval lora_adapters/ --base-model models/base_model/smollm2-135m-instruct --tasks fpb,ner
    python -m eval --base-model models/base_model/smollm2-135m-instruct --tasks formula   # the base alone
    python -m eval score --task fpb --predictions eval_results/demo/predictions/<row>/fpb.jsonl
    python -m eval --list-tasks

Exit codes: 0 all rows evaluated; 1 finished but some rows/groups report errors (see results.md);
2 bad input (one `error:` line on stderr, nothing evaluated or written).
--help, --list-tasks, --dry-run and `score` never import torch (tests/test_eval_cli.py checks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from lora.errors import OneLineParser, UserError


def build_parser() -> argparse.ArgumentParser:
    from eval.finlora_scoring import scoring_mode
    from eval.runner import QUANT_CHOICES
    from lora.prompts import PROMPT_FORMATS

    p = OneLineParser(
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
    p.add_argument("--scoring", type=scoring_mode, default="standard",
                   help="standard (default) or finlora: FinLoRA's harness rules (raw prompt, its budgets and "
                        "scorers; docs/eval.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the plan (groups, rows, prompts) and exit")
    p.add_argument("--list-tasks", action="store_true", help="print the task registry and exit")
    return p


def build_score_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m eval score",
        description='Score a predictions file (one {"output": ..., "target": ...} per line) with a task\'s metric; '
                    "prints the metrics as JSON. No model is loaded.",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help="JSONL file; eval's own predictions/<row>/<task>.jsonl works")
    p.add_argument("--tasks-json", help="another task registry (default: eval/tasks.json)")
    return p


def read_predictions(path: Path) -> tuple[list[str], list[str]]:
    from lora.files import require_file
    from lora.jsonl import read_jsonl

    require_file(path, "predictions file")
    outputs, targets = [], []
    for _, obj in read_jsonl(path, ("output", "target"), "predictions file"):
        outputs.append(obj["output"])
        targets.append(obj["target"])
    if not outputs:
        raise UserError(f"{path}: no predictions")
    return outputs, targets


def score_main(argv: list[str]) -> int:
    from eval.tasks import load_registry, load_task_data, select_tasks
    from lora.files import user_path

    args = build_score_parser().parse_args(argv)
    task = select_tasks(load_registry(args.tasks_json), [args.task])[0]
    outputs, targets = read_predictions(user_path(args.predictions, "predictions file"))
    kind = task.kind
    labels = task.labels
    if kind.has_labels and labels is None:
        labels = load_task_data(task).labels  # the registry leaves the label set to the data
    for i, t in enumerate(targets, start=1):
        problem = kind.target_problem(kind.normalize_target(t), labels)
        if problem:
            raise UserError(f"{args.predictions}:{i}: target {t!r} {problem}")
    if kind.needs_encoder or kind.extract is not None:
        raise UserError(f"task {task.name}: kind {kind.name} needs the prompts (or an encoder); `score` re-scores "
                        "with standard kinds only")
    metrics, _ = kind.score(outputs, targets, labels)
    print(json.dumps({"task": task.name, "kind": kind.name, "headline": task.headline, **metrics}, indent=2))
    return 0


def list_tasks(registry) -> int:
    """One line per task; a task whose test file is absent says MISSING with the path to put it at."""
    from eval.tasks import has_data
    from lora.fsutil import repo_relative

    width = max(len(n) for n in registry)
    missing = 0
    for t in registry.values():
        labels = f" labels={','.join(t.labels)}" if t.labels else ""
        finlora = f" finlora={t.finlora.kind.name}/{t.finlora.max_new_tokens}" if t.finlora else " finlora=-"
        status = "" if has_data(t) else "MISSING "
        missing += bool(status)
        print(f"{t.name:{width}s} {t.kind.name:14s} headline={t.headline} max_new_tokens={t.max_new_tokens}"
              f"{finlora}{labels}  {status}{repo_relative(t.data)}")
    print(f"{len(registry)} tasks, {missing} with MISSING test files (copy FinLoRA's data/test/<file> to the path "
          "shown; without --tasks only the tasks whose file is here run)")
    return 0


def check_run_args(args) -> None:
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be a positive integer")
    if args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    if args.scoring == "finlora" and args.prompt_format:
        raise UserError("--prompt-format does nothing under --scoring finlora: FinLoRA's harness feeds every model the "
                        "raw context; drop one of the two")
    if not args.paths and not args.base_model:
        raise UserError("give adapter folders, or --base-model PATH to evaluate a base model alone")
    if args.bertscore_model:
        from lora.files import stat_kind, user_path

        if stat_kind(user_path(args.bertscore_model, "--bertscore-model"), "--bertscore-model") != "dir":
            raise UserError(f"--bertscore-model {args.bertscore_model}: not a local folder (BERTScore never downloads)")


def grouped_adapters(args) -> list:
    """Adapters grouped by base; a --base-model that is not here is bad input, not an error row."""
    from eval.discovery import Group, discover, group_by_base, resolve_base

    if args.base_model is not None:
        base = resolve_base(args.base_model)
        if base.error:
            raise UserError(f"--base-model: {base.error}")
    adapters = discover(args.paths) if args.paths else []
    return group_by_base(adapters, args.base_model) if adapters else [Group(resolve_base(args.base_model), [])]


def dry_run(groups, datas, settings) -> int:
    from eval.runner import rows_and_pairs

    many = sum(1 for g in groups if g.base.error is None) > 1
    for g in groups:
        print(f"base {g.base.ref} -> {g.base.path or g.base.error}")
        rows, pairs = rows_and_pairs(g, datas, settings, many)
        for r in rows:
            print(f"  {r.kind:7s} {r.name}" + (f"  ERROR: {r.error}" if r.error else ""))
        for p in pairs:
            print(f"    {p.row} × {p.task}: prompt {p.prompt_format}")
    return 0


def write_results(results: dict, out: Path) -> None:
    from eval import report
    from lora.fsutil import write_atomic, write_json_atomic

    write_json_atomic(out / "results.json", results)
    write_atomic(out / "results.csv", report.to_csv(results))
    markdown = report.to_markdown(results)
    write_atomic(out / "results.md", markdown)
    print(markdown)
    print(f"wrote {out}/results.md, results.csv, results.json, predictions/", file=sys.stderr)


def run_main(argv: list[str]) -> int:
    from eval.runner import Settings, run
    from eval.tasks import for_scoring, load_registry, load_task_data, parse_task_names, runnable_tasks
    from lora.files import check_writable_dir, user_path

    args = build_parser().parse_args(argv)
    registry = load_registry(args.tasks_json)
    if args.list_tasks:
        return list_tasks(registry)
    check_run_args(args)
    tasks, skipped = runnable_tasks(registry, parse_task_names(args.tasks))
    tasks = [for_scoring(t, args.scoring, args.bertscore_model) for t in tasks]
    # Everything that can be wrong with the input is checked before a model loads or a file is written.
    datas = {t.name: load_task_data(t).head(args.limit) for t in tasks}
    groups = grouped_adapters(args)
    settings = Settings(
        out=user_path(args.out, "--out"), limit=args.limit, batch_size=args.batch_size, base_quant=args.base_quant,
        no_base=args.no_base, prompt_format=args.prompt_format, force=args.force,
        bertscore_model=args.bertscore_model, scoring=args.scoring, progress=not args.no_progress,
        argv=["python", "-m", "eval", *argv],
    )
    if not args.dry_run:
        check_writable_dir(settings.out, "--out")  # now, not after hours of generation
    if skipped:  # said once the input is known good: bad input stays one line
        print(f"skipping {len(skipped)} task(s) whose test file is missing: {', '.join(t.name for t in skipped)} "
              "(python -m eval --list-tasks)", file=sys.stderr)
    if args.dry_run:
        return dry_run(groups, datas, settings)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only anyway
    quiet_library_noise(keep_bitsandbytes=args.base_quant in (4, 8))
    results, errors = run(groups, datas, settings)
    results["settings"]["scoring"] = settings.scoring  # report.build_results knows no scoring mode yet
    write_results(results, settings.out)
    return 1 if errors else 0


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(f in text for f in self.fragments)


def quiet_library_noise(keep_bitsandbytes: bool = False) -> None:
    """Drop the import-time chatter of optional libraries that says nothing about this run; each filter
    matches one known message, so anything else those libraries log still shows."""
    # torchao (pulled in by peft/transformers) tries its CUDA-only kernels on import and logs each .so.
    logging.getLogger("torchao").addFilter(_DropMessages("Failed to load "))
    # torchao registers Enums with torch's pytree, which torch now deprecates, once per Enum.
    logging.getLogger("torch.utils._pytree").addFilter(_DropMessages("is an Enum subclass"))
    # bitsandbytes probes an optional hub kernel for CPU 4-bit; offline it is absent and its own code is
    # used. Only worth saying when the run actually loads a 4/8-bit base.
    warnings.filterwarnings("ignore", message=r"Skipping publisher trust check", category=UserWarning)
    if not keep_bitsandbytes:
        logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("from kernels-community"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "score":
            return score_main(argv[1:])
        return run_main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
