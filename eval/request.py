"""An eval request, checked and decided before any model loads: adapters grouped by base, the tasks each one runs,
k-shot examples, precision, and how many processes evaluate.

    finlora eval lora_adapters/ --dry-run     # prints what these functions decided, loads nothing

Everything that can be wrong with the input is found here (one `error:` line, exit 2), not after hours of
generation. The `eval` verb (lora/cli/verbs/eval.py) calls these in order, then eval/runner.py runs the plan.
"""
from __future__ import annotations

import os
import sys

from eval.adapter_tasks import FAMILY_TASKS, select
from eval.discovery import Group, discover, group_by_base, resolve_base
from eval.distributed import RankPlan, launch, threads_per_rank, usable_cpus
from eval.run_plan import rows_and_pairs
from eval.shots import plan_task, read_train
from eval.tasks import for_scoring
from eval.world import DEFAULT_RANK_TIMEOUT
from lora.core.errors import UserError
from lora.core.files import stat_kind, user_path
from lora.core.precision import cpu_facts


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
        if stat_kind(user_path(args.bertscore_model, "--bertscore-model"), "--bertscore-model") != "dir":
            raise UserError(f"--bertscore-model {args.bertscore_model}: not a local folder (BERTScore never downloads)")


def resolve_precision(requested: str, quant: int | None):
    """--precision for this machine (eval.engine.eval_precision); the only place eval looks at the hardware."""
    # torch (and eval.engine, which imports it) only here: --help, --list-tasks and --dry-run never load it
    import torch

    from eval.engine import eval_precision

    cuda_bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None
    return eval_precision(requested, quant, cuda_bf16, cpu_facts() if cuda_bf16 is None else None)


def grouped_adapters(args) -> list:
    """Adapters grouped by base; a --base-model that is not here is bad input, not an error row."""
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
    datas = {}
    for name, d in full.items():
        settings.shot_plans[name], datas[name] = plan_task(d, read_train(d.task), settings.shots,
                                                           settings.shot_seed, settings.limit)
    return datas


def dry_run(groups, datas, settings) -> int:
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


def run_processes(groups, datas, settings, processes: int, args) -> int:
    """The plan, evaluated by `processes` ranks (eval/distributed.py); rank 0 writes what run() would."""
    threads = threads_per_rank(processes, usable_cpus(), os.environ)
    print(f"eval: {processes} processes (torchrun, gloo), each loads the base once"
          + (f", {threads} CPU thread(s) each" if threads else ""), file=sys.stderr)
    plan = RankPlan(groups, datas, settings, threads, args.rank_timeout or DEFAULT_RANK_TIMEOUT,
                    keep_bitsandbytes=args.base_quant in (4, 8))
    return launch(plan, processes)
