"""Command line: evaluate adapters (default) or re-score a predictions file (`score`).

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100
    python -m eval lora_adapters/ --shots 3        # each adapter on its own tasks (FinLoRA's map), 3-shot base
    python -m eval lora_adapters/ --base-model models/base_model/smollm2-135m-instruct --tasks fpb,ner
    python -m eval --base-model models/base_model/smollm2-135m-instruct --tasks formula   # the base alone
    python -m eval lora_adapters/ --processes 4    # data-parallel, one process per GPU (eval/distributed.py)
    python -m eval score --task fpb --predictions eval_results/demo/predictions/<row>/fpb.jsonl
    python -m eval report eval_results/demo --layout finlora   # FinLoRA's table layout + PNG from results.json
    python -m eval --list-tasks

Exit codes: 0 all rows evaluated; 1 finished but some rows/groups report errors (see results.md);
2 bad input (one `error:` line on stderr, nothing evaluated or written).
--help, --list-tasks, --dry-run, `score` and `report` never import torch (tests/test_eval_cli.py checks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from lora.errors import OneLineParser, UserError, did_you_mean


def build_parser() -> argparse.ArgumentParser:
    from eval.finlora_scoring import scoring_mode
    from eval.runner import QUANT_CHOICES
    from lora.precision import REQUESTS
    from lora.prompts import PROMPT_FORMATS

    p = OneLineParser(
        prog="python -m eval",
        description="Evaluate LoRA adapters (folders with adapter_config.json, searched recursively) and their "
                    "base model on the finance test sets. `python -m eval score --help` re-scores a predictions file; "
                    "`python -m eval report --help` re-lays a finished run's results.json (FinLoRA's layout).",
    )
    p.add_argument("paths", nargs="*", help="adapter folders, or folders containing them (checkpoint-* skipped)")
    p.add_argument("--tasks", action="append", help="comma-separated task names, for every row (default: each adapter "
                   "on its own tasks, FinLoRA's map in eval/adapter_tasks.py; the base alone: every task present)")
    p.add_argument("--out", default="eval_results", help="output folder (default: eval_results)")
    p.add_argument("--limit", type=int, help="first N rows of each task (file order)")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument("--base-model", help="load this base for every adapter (a local folder or a cached hub id)")
    p.add_argument("--base-quant", type=int, choices=QUANT_CHOICES, help="load the base in 4/8-bit (bitsandbytes) or 16-bit")
    p.add_argument("--no-base", action="store_true", help="skip the base row")
    p.add_argument("--precision", choices=REQUESTS, default="auto",
                   help="full-precision bases: bf16 where the CPU has bf16 matmuls (AMX/AVX512-BF16), else fp32; on "
                        "CUDA auto keeps the checkpoint's dtype (default auto)")
    p.add_argument("--prefix-cache", choices=("auto", "on", "off"), default="auto",
                   help="run each task's shared prompt prefix once per model and reuse its KV cache; auto (default): "
                        "for fp32 models, where outputs are identical either way; in bf16 'on' may change a few")
    p.add_argument("--merge-lora", choices=("auto", "on", "off"), default="auto",
                   help="run each adapter's rows on the base with the adapter merged in (restored after); auto "
                        "(default): for a bf16 base on the CPU, where unmerged LoRA layers are slow; fp32 and CUDA "
                        "stay unmerged unless 'on' (a DoRA adapter, a 4/8-bit base, or too little memory: unmerged)")
    p.add_argument("--shots", type=int, default=0, metavar="K",
                   help="K-shot base row (FinLoRA compares with 3-shot): K examples from the task's train file "
                        "(else held-out test rows) in front of each prompt; adapters stay zero-shot (default 0)")
    p.add_argument("--shot-seed", type=int, default=0, metavar="N", help="seed of the k-shot examples (default 0)")
    p.add_argument("--prompt-format", choices=sorted(PROMPT_FORMATS),
                   help="prompt for adapters without run.json (default: the task's, else finlora_inst)")
    p.add_argument("--tasks-json", help="another task registry (default: eval/tasks.json)")
    p.add_argument("--force", action="store_true", help="redo pairs already finished in --out")
    p.add_argument("--bertscore-model", help="local encoder folder: adds BERTScore F1 to text tasks (never downloads)")
    p.add_argument("--scoring", type=scoring_mode, default="standard",
                   help="standard (default) or finlora: FinLoRA's harness rules (raw prompt, its budgets and "
                        "scorers; docs/eval.md)")
    p.add_argument("--processes", type=int, metavar="N",
                   help="evaluate data-parallel in N processes (torchrun's launcher), each with the base loaded "
                        "once and a token-balanced share of every pair's rows; same files as one process "
                        "(default: every visible GPU on a GPU machine, 1 on CPU)")
    p.add_argument("--rank-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --processes N>1: fail the run when a rank gives no answer for this long "
                        "(default 1800)")
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


# --layout NAME -> (module, what it shows). The module has read_results(out), write_report(out, results, argv)
# -> the printed table, and OUTPUTS (the file names it writes into OUT); it is imported only when used, so
# `report --help` imports nothing heavy.
REPORT_LAYOUTS = {
    "finlora": ("eval.finlora_layout", "task rows × FinLoRA's method columns, its published numbers beside ours, "
                "and a PNG panel per task"),
}


def build_report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m eval report",
        description="Re-lay an earlier run's OUT/results.json (python -m eval ... --out OUT) in another layout; "
                    "writes the layout's files into OUT and prints its table. No model is loaded.",
    )
    p.add_argument("out", metavar="OUT", help="the --out folder of an earlier run (holds results.json)")
    p.add_argument("--layout", default="finlora", metavar="NAME",
                   help="; ".join(f"{k}: {v[1]}" for k, v in REPORT_LAYOUTS.items()) + " (default: finlora)")
    return p


def report_main(argv: list[str]) -> int:
    import importlib

    from lora.files import check_writable_dir, user_path

    args = build_report_parser().parse_args(argv)
    if args.layout not in REPORT_LAYOUTS:
        hint = did_you_mean(args.layout, REPORT_LAYOUTS, cutoff=0.5)
        raise UserError(f"unknown layout {args.layout!r}{hint} (known: {', '.join(REPORT_LAYOUTS)})")
    layout = importlib.import_module(REPORT_LAYOUTS[args.layout][0])
    out = user_path(args.out, "OUT")
    results = layout.read_results(out)
    check_writable_dir(out, "OUT")  # before rendering: a read-only folder is one line, not a traceback
    print(layout.write_report(out, results, ["python", "-m", "eval", "report", *argv]), end="")
    print(f"wrote {', '.join(f'{out}/{name}' for name in layout.OUTPUTS)}", file=sys.stderr)
    return 0


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
    if args.shots < 0:
        raise UserError(f"--shots {args.shots}: must be 0 or a positive integer")
    if args.shots and args.no_base:
        raise UserError("--shots gives the base row examples; with --no-base there is no base row")
    if args.scoring == "finlora" and args.prompt_format:
        raise UserError("--prompt-format does nothing under --scoring finlora: FinLoRA's harness feeds every model the "
                        "raw context; drop one of the two")
    if args.processes is not None and args.processes < 1:
        raise UserError(f"--processes {args.processes}: must be 1 or more")
    if args.rank_timeout is not None and not args.rank_timeout > 0:
        raise UserError(f"--rank-timeout {args.rank_timeout:g}: must be a positive number of seconds")
    if not args.paths and not args.base_model:
        raise UserError("give adapter folders, or --base-model PATH to evaluate a base model alone")
    if args.bertscore_model:
        from lora.files import stat_kind, user_path

        if stat_kind(user_path(args.bertscore_model, "--bertscore-model"), "--bertscore-model") != "dir":
            raise UserError(f"--bertscore-model {args.bertscore_model}: not a local folder (BERTScore never downloads)")


def resolve_precision(requested: str, quant: int | None):
    """--precision for this machine (eval.engine.eval_precision); the only place eval looks at the hardware."""
    import torch

    from eval.engine import eval_precision
    from lora.precision import cpu_facts

    cuda_bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None
    return eval_precision(requested, quant, cuda_bf16, cpu_facts() if cuda_bf16 is None else None)


def grouped_adapters(args) -> list:
    """Adapters grouped by base; a --base-model that is not here is bad input, not an error row."""
    from eval.discovery import Group, discover, group_by_base, resolve_base

    if args.base_model is not None:
        base = resolve_base(args.base_model)
        if base.error:
            raise UserError(f"--base-model: {base.error}")
    adapters = discover(args.paths) if args.paths else []
    return group_by_base(adapters, args.base_model) if adapters else [Group(resolve_base(args.base_model), [])]


def select_default_tasks(groups, registry: dict, base_alone: bool) -> list:
    """No --tasks: each adapter gets its family's tasks (eval/adapter_tasks.py), set on adapter.tasks; one
    stderr note per skipped task (data file absent, or not in the registry). Returns the tasks to load.
    Relabelled tasks (a `relabel` map) are never picked by default: they only re-score a file another task reads."""
    from eval.adapter_tasks import select

    adapters = [a for g in groups for a in g.adapters]
    registry = {n: t for n, t in registry.items() if not t.relabel}
    missing = {n: str(t.data) for n, t in registry.items() if not t.data.is_file()}
    sel = select([(a.name, a.family, a.error is None) for a in adapters], list(registry), missing, base_alone)
    if not sel.needed and (base_alone or any(a.error is None for a in adapters)):
        raise UserError("no task to evaluate: " + "; ".join(sel.skipped.values()) + " (name tasks with --tasks)")
    for a in adapters:
        a.tasks = sel.per_adapter[a.name]
    for why in sel.skipped.values():
        print(f"note: skipped {why}", file=sys.stderr)
    return [registry[t] for t in sel.needed]


def scored_tasks(tasks: list, scoring: str, encoder: str | None, named: bool) -> list:
    """Each task as the scoring mode evaluates it (eval/tasks.for_scoring). A task the mode cannot score is
    exit 2 when named with --tasks, a note when it was only picked by default (every adapter's own tasks)."""
    from eval.tasks import for_scoring

    out, skipped = [], []
    for t in tasks:
        try:
            out.append(for_scoring(t, scoring, encoder))
        except UserError as exc:
            if named:
                raise
            skipped.append(str(exc))
    if not out:  # nothing left: the reason is the error (the first one; each names its task)
        more = f" (and {len(skipped) - 1} more tasks)" if len(skipped) > 1 else ""
        raise UserError(f"{skipped[0]}{more}")
    for why in skipped:
        print(f"note: skipped {why}", file=sys.stderr)
    return out


def plan_shots(full: dict, settings) -> dict:
    """--shots K: every loaded task's examples (eval/shots.py), and the rows each task is then scored on."""
    from eval.shots import plan_task, read_train

    datas = {}
    for name, d in full.items():
        settings.shot_plans[name], datas[name] = plan_task(d, read_train(d.task), settings.shots,
                                                           settings.shot_seed, settings.limit)
    return datas


def dry_run(groups, datas, settings) -> int:
    from eval.adapter_tasks import FAMILY_TASKS
    from eval.runner import rows_and_pairs

    if settings.per_adapter_tasks:
        print("tasks per adapter family (eval/adapter_tasks.py; --tasks overrides):")
        for fam, tasks in FAMILY_TASKS.items():
            print(f"  {fam}: {', '.join(tasks)}")
    many = sum(1 for g in groups if g.base.error is None) > 1
    for g in groups:
        print(f"base {g.base.ref} -> {g.base.path or g.base.error}")
        rows, pairs = rows_and_pairs(g, datas, settings, many)
        for r in rows:
            line = f"  {r.kind:7s} {r.name}"
            if r.error:
                line += f"  ERROR: {r.error}"
            elif settings.per_adapter_tasks:
                line += f"  tasks: {', '.join(r.tasks) or '(none present)'}"
                if r.adapter is not None and r.adapter.family is not None:
                    fam = r.adapter.family
                    line += f"  ({fam.describe()}" + ("; every task present)" if fam.name is None else ")")
            print(line)
        for p in pairs:
            print(f"    {p.row} × {p.task}: prompt {p.prompt_format}" + (f", {p.shots.k}-shot" if p.shots else ""))
    for name, plan in settings.shot_plans.items():
        f = plan.facts()
        src = (f"train file {f['path']} ({f['pool_size']} examples)" if f["source"] == "train" else
               f"test rows {f['held_out_ids']} (no train file; held out of every row's scoring"
               + (f", with rows {f['duplicate_ids']} that repeat them)" if f["duplicate_ids"] else ")"))
        print(f"shots {name}: {f['k']} per row from {src}, seed {f['seed']}; scored rows n={len(datas[name].rows)}")
    return 0


def decide_processes(requested: int | None, gpus: int, cpus: int, base_quant: int | None) -> int:
    """How many processes evaluate (pure): every visible GPU by default on a GPU machine, 1 on CPU; never
    more processes than GPUs (one each), or than CPU cores without one."""
    if gpus:
        if requested is not None and requested > gpus:
            raise UserError(f"--processes {requested}: only {gpus} CUDA GPU(s) found on this machine "
                            "(one process per GPU; CUDA_VISIBLE_DEVICES narrows them)")
        return requested or gpus
    n = requested or 1
    if n > cpus:
        raise UserError(f"--processes {n}: no CUDA GPU found and only {cpus} CPU core(s) available here")
    if n > 1 and base_quant in (4, 8):
        raise UserError(f"--processes {n} with --base-quant {base_quant} on CPU: not supported (each process "
                        "would load its own bitsandbytes base, a path not tested here, and on a CPU the processes "
                        "share the same cores: docs/eval.md); use --processes 1 on CPU, or a GPU machine")
    return n


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
    from eval.tasks import load_registry, load_task_data, parse_task_names, runnable_tasks
    from lora.files import check_writable_dir, user_path

    args = build_parser().parse_args(argv)
    registry = load_registry(args.tasks_json)
    if args.list_tasks:
        return list_tasks(registry)
    check_run_args(args)
    names = parse_task_names(args.tasks)
    tasks = runnable_tasks(registry, names)[0] if names is not None else None  # a named missing file: exit 2
    # Everything that can be wrong with the input is checked before a model loads or a file is written.
    groups = grouped_adapters(args)
    if tasks is None:  # each adapter on its own tasks; a mapped task whose data is absent is a note
        tasks = select_default_tasks(groups, registry, base_alone=not args.paths)
    tasks = scored_tasks(tasks, args.scoring, args.bertscore_model, named=names is not None)
    full = {t.name: load_task_data(t) for t in tasks}
    settings = Settings(
        out=user_path(args.out, "--out"), limit=args.limit, batch_size=args.batch_size, base_quant=args.base_quant,
        no_base=args.no_base, prompt_format=args.prompt_format, force=args.force,
        bertscore_model=args.bertscore_model, scoring=args.scoring, progress=not args.no_progress,
        argv=["python", "-m", "eval", *argv],
        shots=args.shots, shot_seed=args.shot_seed, per_adapter_tasks=names is None,
        prefix_cache={"auto": None, "on": True, "off": False}[args.prefix_cache], merge_lora=args.merge_lora,
    )
    if args.shots:
        datas = plan_shots(full, settings)
    else:
        datas = {n: d.head(args.limit) for n, d in full.items()}
    if args.dry_run:
        return dry_run(groups, datas, settings)
    from eval.distributed import usable_cpus
    from lora.launch import detect_cuda_gpus

    processes = decide_processes(args.processes, detect_cuda_gpus(), usable_cpus(), args.base_quant)
    if args.rank_timeout is not None and processes == 1:
        raise UserError("--rank-timeout applies to several processes; this run has one (--processes)")
    settings.precision = resolve_precision(args.precision, args.base_quant)  # a bf16 that cannot run: exit 2
    check_writable_dir(settings.out, "--out")  # now, not after hours of generation
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only anyway
    quiet_library_noise(keep_bitsandbytes=args.base_quant in (4, 8))
    if processes > 1:
        return run_processes(groups, datas, settings, processes, args)
    results, errors = run(groups, datas, settings)
    write_results(results, settings.out)
    return 1 if errors else 0


def run_processes(groups, datas, settings, processes: int, args) -> int:
    """The plan, evaluated by `processes` ranks (eval/distributed.py); rank 0 writes what run() would."""
    from eval.distributed import DEFAULT_RANK_TIMEOUT, RankPlan, launch, threads_per_rank, usable_cpus

    threads = threads_per_rank(processes, usable_cpus(), os.environ)
    print(f"eval: {processes} processes (torchrun, gloo), each loads the base once"
          + (f", {threads} CPU thread(s) each" if threads else ""), file=sys.stderr)
    plan = RankPlan(groups, datas, settings, threads, args.rank_timeout or DEFAULT_RANK_TIMEOUT,
                    keep_bitsandbytes=args.base_quant in (4, 8))
    return launch(plan, processes)


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
        if argv and argv[0] == "report":
            return report_main(argv[1:])
        return run_main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
