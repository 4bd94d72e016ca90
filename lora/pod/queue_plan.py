"""A queue's plan: its runs, its name and folder, a sweep's entries, and --dry-run's plan of every run.

    python finetune.py tiny --sweep lora_r=4,8 learning_rate=1e-4,5e-4 --dry-run   # plans, launches nothing
    python finetune.py --match 'sentiment_*_cpu' --dry-run

Pure but for reading the registry: `plan_queue` makes every check that can fail on the input before anything
runs or is written, and builds the QueuePlan that lora/pod/queue.py carries out.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.errors import UserError, did_you_mean
from lora.core.files import repo_relative
from lora.core.names import MAX_NAME_LEN, check_name
from lora.estimate import MissingFacts, plan_for_entry
from lora.pod.queue_state import QueueState, RunState
from lora.recipe.profiles import PROFILES
from lora.recipe.registry import Registry
from lora.recipe.sweep import (
    MAX_RUNS_WITHOUT_YES,
    SWEEP_FILE,
    Derived,
    expand,
    parse_sweep,
    run_count,
)
from lora.train.launch import LaunchRequest, entry_for, workers_here

QUEUES_DIR = "queues"  # under the adapters folder


@dataclass(frozen=True)
class QueueOptions:
    """The CLI's queue flags, typed."""

    names: tuple[str, ...] = ()
    match: str | None = None
    sweep: tuple[str, ...] = ()
    sweep_base: str | None = None
    queue_name: str | None = None
    eval_mode: str = "after"
    eval_limit: int | None = None
    stop_on_error: bool = False
    on_finish: tuple[str, ...] = ()
    yes: bool = False
    dry_run: bool = False
    lock_wait: float | None = None  # seconds; None: wait as long as it takes
    usd_per_gpu_hour: float | None = None
    gpus: int | None = None
    cpu_processes: int = 1
    zero: int | None = None
    adapters_dir: Path = Path("lora_adapters")
    recipes_dir: Path = Path("recipes")
    command: tuple[str, ...] = ()


@dataclass
class QueuePlan:
    name: str
    folder: Path
    registry: Registry  # where the runs come from (for a sweep: in memory until written)
    runs: list[str]
    swept: dict[str, dict] = field(default_factory=dict)
    derived: list[Derived] = field(default_factory=list)  # a sweep's entries, written to folder/sweep.json

    @property
    def sweep_file(self) -> Path:
        return self.folder / SWEEP_FILE


# ---------------------------------------------------------------- plan (pure but for reading the registry)


def select_names(registry: Registry, names: tuple[str, ...], pattern: str | None) -> list[str]:
    """--queue names (each checked, close matches for a typo) then --match's, in registry order, once each."""
    chosen: list[str] = []
    for n in names:
        registry.get(n)  # UserError: unknown run, did you mean
        chosen.append(n)
    if pattern is not None:
        matched = [n for n in registry.entries if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UserError(f"--match {pattern!r} matches none of the {len(registry.entries)} entries in "
                            f"{registry.path.name}{did_you_mean(pattern, registry.entries)} (`--list` shows them)")
        chosen += matched
    return list(dict.fromkeys(chosen))


def derive_queue_name(options: QueueOptions, registry_path: Path) -> str:
    """Readable and deterministic: what the command asked for, plus a hash of it (and of the registry)."""
    spec = json.dumps({"names": options.names, "match": options.match, "sweep": options.sweep,
                       "base": options.sweep_base, "registry": str(registry_path.resolve())})
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
    if options.sweep:
        keys = "-".join(s.partition("=")[0] for s in options.sweep)
        words = f"sweep-{options.sweep_base}-{keys}"
    elif options.match and not options.names:
        words = f"match-{options.match}"
    else:
        first = options.names[0] if options.names else options.match
        more = len(options.names) - 1 + (1 if options.match and options.names else 0)
        words = f"queue-{first}" + (f"-and-{more}-more" if more else "")
    words = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "_", words))
    return f"{words[: MAX_NAME_LEN - 10]}-{digest}"


def plan_queue(registry: Registry, options: QueueOptions) -> QueuePlan:
    """Every check that can fail on the input, before anything runs or is written."""
    name = check_name(options.queue_name, "--queue-name") if options.queue_name else \
        derive_queue_name(options, registry.path)
    folder = options.adapters_dir / QUEUES_DIR / name
    if options.sweep:
        keys = parse_sweep(list(options.sweep))
        count = run_count(keys)
        derived = expand(registry, options.sweep_base, keys)
        plan = QueuePlan(name, folder, Registry(path=registry.path, entries={d.name: d.entry for d in derived}),
                         [d.name for d in derived], {d.name: d.swept for d in derived}, derived)
        if count > MAX_RUNS_WITHOUT_YES and not options.yes and not options.dry_run:
            total = total_cost(plan_rows(plan, options))
            raise UserError(f"--sweep makes {count} runs (over {MAX_RUNS_WITHOUT_YES}), total plan cost "
                            f"{total}; add --yes to queue them all, or --dry-run to see each")
    else:
        plan = QueuePlan(name, folder, registry, select_names(registry, options.names, options.match))
    if QUEUES_DIR in plan.runs:
        raise UserError(f"run name {QUEUES_DIR!r} is the queues' folder under {options.adapters_dir}; rename the entry")
    return plan


def request_for(name: str, options: QueueOptions, dry_run: bool = False) -> LaunchRequest:
    return LaunchRequest(name=name, zero=options.zero, gpus=options.gpus, cpu_processes=options.cpu_processes,
                         dry_run=dry_run, recipes_dir=options.recipes_dir, adapters_dir=options.adapters_dir)


def fresh_state(plan: QueuePlan, options: QueueOptions) -> QueueState:
    registry = plan.sweep_file if plan.derived else plan.registry.path
    return QueueState(
        name=plan.name, command=list(options.command), registry=repo_relative(registry), eval_mode=options.eval_mode,
        sweep_base=options.sweep_base if plan.derived else None,
        sweep_keys=[s.partition("=")[0].strip() for s in options.sweep] if plan.derived else [],
        runs=[RunState(name=n, swept=plan.swept.get(n, {})) for n in plan.runs],
    )


# ---------------------------------------------------------------- --dry-run: the plan of every run


def plan_rows(plan: QueuePlan, options: QueueOptions) -> list[dict]:
    rows = []
    for name in plan.runs:
        request = request_for(name, options, dry_run=True)
        entry = entry_for(plan.registry, request)
        workers = workers_here(request, PROFILES[entry.profile])
        row = {"name": name, "profile": entry.profile, "swept": plan.swept.get(name, {}), "steps": None,
               "hours": None, "cost_usd": None, "note": None}
        try:
            p = plan_for_entry(plan.registry, entry, num_gpus=workers, usd_per_gpu_hour=options.usd_per_gpu_hour)
            row.update(steps=p.steps, hours=p.hours, cost_usd=p.cost_usd,
                       note=None if p.fits is not False else f"DOES NOT FIT: {p.overflow}")
        except (MissingFacts, UserError) as exc:
            row["note"] = f"no plan: {exc}"
        rows.append(row)
    return rows


def total_cost(rows: list[dict]) -> str:
    costs = [r["cost_usd"] for r in rows if r["cost_usd"] is not None]
    unknown = len(rows) - len(costs)
    text = f"${sum(costs):.2f}" if costs else "unknown"
    return text + (f" (+{unknown} run(s) without a price)" if costs and unknown else "")


def format_dry_run(plan: QueuePlan, rows: list[dict]) -> str:
    lines = [f"queue {plan.name}: {len(rows)} run(s); state and summary in {repo_relative(plan.folder)}/"]
    if plan.derived:
        lines.append(f"sweep registry (written on launch): {repo_relative(plan.sweep_file)}")
    width = max(len(r["name"]) for r in rows) if rows else 4
    for r in rows:
        hours = "–" if r["hours"] is None else f"{r['hours']:.2f} h"
        cost = "–" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}"
        steps = "–" if r["steps"] is None else str(r["steps"])
        swept = "  " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r["swept"].items()) if r["swept"] else ""
        lines.append(f"  {r['name']:{width}s}  {r['profile']:8s} {steps:>7s} steps {hours:>9s} {cost:>9s}{swept}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    hours = [r["hours"] for r in rows if r["hours"] is not None]
    lines.append(f"total: {sum(r['steps'] or 0 for r in rows)} steps, "
                 f"{f'{sum(hours):.2f} h' if hours else 'time not estimated'}, cost {total_cost(rows)}; "
                 "nothing launched")
    return "\n".join(lines)

