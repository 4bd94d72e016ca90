"""Options that several verbs share, defined once: the registry, the run name, the machine, the price, SkyPilot,
queues. A verb adds the groups it takes; a flag a verb does not take is simply unknown to it (exit 2).

    finlora train sentiment_smollm2_cpu --cpu-processes 2 --precision fp32
    finlora plan formula_llama_3_1_8b_8bits_r8 --profile h100x1 --usd-per-gpu-hour 2.5

Numbers argparse accepts but that mean nothing (a port of 70000, --gpus 0, a price of nan) are refused by
`check_numbers`, which lora/cli runs after every verb's parse: one line, exit 2.
"""
from __future__ import annotations

import argparse
import math
from argparse import Namespace
from pathlib import Path

from lora.core.errors import UserError
from lora.core.precision import REQUESTS
from lora.pod.sky import STORES
from lora.recipe.profiles import AUTO, profile_from_gpus, profile_named, use_detected
from lora.recipe.registry import Entry, Registry, load_registry
from lora.recipe.render import DEFAULT_ADAPTERS_DIR, DEFAULT_RECIPES_DIR, DEFAULT_REGISTRY
from lora.recipe.sweep import MAX_RUNS_WITHOUT_YES
from lora.train.launch import LaunchRequest, check_request, entry_for
from lora.train.preflight import gather_gpus

FLAG_RANGES = {  # flag: (attribute, lowest, highest); checked after parsing, for the verbs that take the flag
    "--gpus": ("gpus", 1, 1024),
    "--cpu-processes": ("cpu_processes", 1, 1024),
    "--num-machines": ("num_machines", 1, 4096),
    "--machine-rank": ("machine_rank", 0, 4095),
    "--main-process-port": ("main_process_port", 1, 65535),
}


def check_numbers(args: Namespace) -> None:
    """Numbers argparse accepted as ints or floats but that mean nothing (a port of 70000, $nan)."""
    for flag, (attr, low, high) in FLAG_RANGES.items():
        value = getattr(args, attr, None)
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: give at least {low}")
        if value is not None and value > high:
            raise UserError(f"{flag} {value}: give at most {high}")
    price = getattr(args, "usd_per_gpu_hour", None)
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise UserError(f"--usd-per-gpu-hour {price}: give a price of 0 or more, in US dollars")
    limit = getattr(args, "eval_limit", None)
    if limit is not None and limit < 1:
        raise UserError(f"--eval-limit {limit}: give a positive number of rows")
    wait = getattr(args, "lock_wait", None)
    if wait is not None and not (math.isfinite(wait) and wait >= 0):
        raise UserError(f"--lock-wait {wait}: give seconds, 0 or more")


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-json", "--config", dest="config_json", type=Path, default=DEFAULT_REGISTRY,
                   help="registry file (default: finetune_configs.json); FinLoRA's files work unchanged")
    p.add_argument("--recipes-dir", type=Path, default=DEFAULT_RECIPES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--adapters-dir", type=Path, default=DEFAULT_ADAPTERS_DIR, help=argparse.SUPPRESS)


def add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="run name from the registry (finlora list)")
    p.add_argument("--run_name", "--run-name", dest="run_name", help=argparse.SUPPRESS)  # FinLoRA's old flag


def run_name(args: Namespace) -> str:
    """The positional name, or FinLoRA's --run_name; given twice it must agree."""
    if args.run_name and args.name and args.run_name != args.name:
        raise UserError("give the run name once (positional or --run_name)")
    name = args.name or args.run_name
    if not name:
        raise UserError("a run name is required (finlora list shows them)")
    return name


def add_machine(p: argparse.ArgumentParser, *, title: str = "this machine", profile: bool = True,
                cpu: bool = True, precision: bool = True, nodes: str | None = "all") -> None:
    """The machine options a verb takes; nodes: "all" (multi-node launch), "count" (--num-machines only), None."""
    g = p.add_argument_group(title)
    if profile:
        g.add_argument("--profile", help="hardware profile for this launch instead of the entry's (docs/pods.md); "
                                         "`auto`: this machine's GPUs")
    g.add_argument("--zero", type=int, choices=(1, 2, 3), help="DeepSpeed ZeRO stage (overrides the entry)")
    g.add_argument("--gpus", type=int, help="GPUs per machine (default: all visible; planned: the profile's)")
    if cpu:
        g.add_argument("--cpu-processes", type=int, default=1,
                       help="cpu entries: training processes on this machine (torchrun, gloo; default 1)")
    if precision:
        g.add_argument("--precision", choices=REQUESTS, default="auto",
                       help="cpu entries: bf16 where the CPU has bf16 matmuls (AMX/AVX512-BF16), else fp32 "
                            "(default auto; lora/core/precision.py)")
    if nodes:
        g.add_argument("--num-machines", type=int, default=1, help="machines in a multi-node run")
    if nodes == "all":
        g.add_argument("--machine-rank", type=int, help="this machine's rank (0 = main) in a multi-node run")
        g.add_argument("--main-process-ip", help="IP of the rank-0 machine in a multi-node run")
        g.add_argument("--main-process-port", type=int, help="port on the rank-0 machine (default 29500)")


def add_price(p: argparse.ArgumentParser) -> None:
    p.add_argument("--usd-per-gpu-hour", type=float,
                   help="price per GPU-hour for the cost estimate (default: the profile's, $0.26 for an A5000)")


def add_sky(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rented GPUs through SkyPilot (docs/cloud.md)")
    g.add_argument("--cloud", help="runpod, lambda, vast, aws, gcp, azure, kubernetes, … (SkyPilot's infra, "
                                   "cloud[/region]; default: the cheapest it finds)")
    g.add_argument("--spot", action="store_true",
                   help="a managed spot job (preemption: new machine, same command, resumes)")
    g.add_argument("--bucket", help="bucket that keeps the adapters and checkpoints")
    g.add_argument("--store", choices=STORES, help="with --bucket: its object store (default: the cloud's)")
    g.add_argument("--volume", help="SkyPilot volume that keeps the adapters (instead of --bucket)")
    g.add_argument("--down", action="store_true",
                   help="delete the machine when training ends (default: after 30 idle minutes, deleted with "
                        "--bucket/--volume, else stopped with its disk)")


def add_queue(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("the queue (docs/queue.md)")
    q.add_argument("--queue-name", help="the queue's folder under lora_adapters/queues/ (default: from the command)")
    q.add_argument("--eval", dest="eval_mode", choices=("after", "end", "none"), default="after",
                   help="evaluate each adapter on its tasks after its run (default), all at the end, or not")
    q.add_argument("--eval-limit", type=int, metavar="N",
                   help="finlora eval --limit N (first N rows per task)")
    q.add_argument("--stop-on-error", action="store_true", help="stop the queue at the first failed run")
    q.add_argument("--lock-wait", type=float, metavar="SECONDS",
                   help="how long to wait for a run another launch holds (default: as long as it takes)")
    q.add_argument("--yes", action="store_true", help=f"allow a sweep of more than {MAX_RUNS_WITHOUT_YES} runs")
    q.add_argument("--dry-run", action="store_true", help="print every run's plan; train nothing")
    q.add_argument("--on-finish", nargs=argparse.REMAINDER, metavar="CMD",
                   help="last flag: run CMD (an argv, no shell) when the queue ends, whatever its outcome")


def resolve_profile_flag(name: str | None) -> None:
    """--profile NAME must name a profile; --profile auto builds one from this machine's GPUs."""
    if name == AUTO:
        use_detected(profile_from_gpus(gather_gpus()))
    elif name is not None:
        profile_named(name)


def launch_inputs(args: Namespace) -> tuple[Registry, LaunchRequest, Entry]:
    """The registry, the typed request and the entry with the request's overrides, all checked (plan, check, train)."""
    registry = load_registry(args.config_json)
    request = launch_request(args, run_name(args))
    resolve_profile_flag(request.profile)
    entry = entry_for(registry, request)
    check_request(request, entry)
    return registry, request, entry


def launch_request(args: Namespace, name: str) -> LaunchRequest:
    """The verb's flags as the launch's typed request; flags a verb does not take keep the request's defaults."""
    given = {k: getattr(args, k) for k in ("zero", "profile", "gpus", "cpu_processes", "num_machines", "machine_rank",
                                           "main_process_ip", "main_process_port", "fresh", "dry_run", "precision",
                                           "recipes_dir", "adapters_dir") if hasattr(args, k)}
    return LaunchRequest(name=name, **given)
