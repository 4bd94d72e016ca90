"""finlora eval PATHS: evaluate LoRA adapters (folders with adapter_config.json, searched recursively) and their base
model on the finance test sets; writes results.json/.csv/.md and every prediction into --out.

    finlora eval lora_adapters/sentiment_smollm2_cpu --tasks fpb --out eval_results/demo --limit 100
    finlora eval lora_adapters/ --shots 3        # each adapter on its own tasks (FinLoRA's map), 3-shot base
    finlora eval --base-model models/base_model/smollm2-135m-instruct --tasks formula   # the base alone
    finlora eval lora_adapters/ --processes 4    # data-parallel, one process per GPU (eval/distributed.py)
    finlora eval --list-tasks

Exit codes: 0 all rows evaluated; 1 finished but some rows/groups report errors (see results.md);
2 bad input (one `error:` line on stderr, nothing evaluated or written).
--help, --list-tasks and --dry-run never import torch (tests/eval/test_cli.py checks). docs/eval.md.
"""
from __future__ import annotations

import os
from argparse import Namespace

from eval.distributed import usable_cpus
from eval.finlora_scoring import scoring_mode
from eval.report import write_results
from eval.request import (
    check_run_args,
    decide_processes,
    dry_run,
    grouped_adapters,
    plan_shots,
    resolve_precision,
    run_processes,
    scored_tasks,
    select_default_tasks,
)
from eval.run_plan import QUANT_CHOICES, Settings
from eval.runner import run as run_pairs
from eval.tasks import has_data, load_registry, load_task_data, parse_task_names, runnable_tasks
from lora.core.errors import UserError
from lora.core.files import check_writable_dir, repo_relative, user_path
from lora.core.gpus import detect_cuda_gpus
from lora.core.noise import quiet_library_noise
from lora.core.precision import REQUESTS
from lora.core.prompts import PROMPT_FORMATS


def register(p) -> None:
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


def list_tasks(registry) -> int:
    """One line per task; a task whose test file is absent says MISSING with the path to put it at."""
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


def run(args: Namespace) -> int:
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
        argv=list(args.invocation),
        shots=args.shots, shot_seed=args.shot_seed, per_adapter_tasks=names is None,
        prefix_cache={"auto": None, "on": True, "off": False}[args.prefix_cache], merge_lora=args.merge_lora,
    )
    if args.shots:
        datas = plan_shots(full, settings)
    else:
        datas = {n: d.head(args.limit) for n, d in full.items()}
    if args.dry_run:
        return dry_run(groups, datas, settings)
    processes = decide_processes(args.processes, detect_cuda_gpus(), usable_cpus(), args.base_quant)
    if args.rank_timeout is not None and processes == 1:
        raise UserError("--rank-timeout applies to several processes; this run has one (--processes)")
    settings.precision = resolve_precision(args.precision, args.base_quant)  # a bf16 that cannot run: exit 2
    check_writable_dir(settings.out, "--out")  # now, not after hours of generation
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only anyway
    quiet_library_noise(keep_bitsandbytes=args.base_quant in (4, 8))
    if processes > 1:
        return run_processes(groups, datas, settings, processes, args)
    results, errors = run_pairs(groups, datas, settings)
    write_results(results, settings.out)
    return 1 if errors else 0
