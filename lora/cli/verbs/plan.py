"""finlora plan NAME: per-GPU memory split into parts, fits?, steps, hours and cost on the entry's profile.

    finlora plan formula_llama_3_1_8b_8bits_r8
    finlora plan formula_llama_3_1_8b_8bits_r8 --profile h100x1 --json
    finlora plan sentiment_llama_3_1_8b_8bits_r8 --usd-per-gpu-hour 0.4

Nothing is launched; the method is docs/plan.md.
"""
from __future__ import annotations

import json
from argparse import Namespace

from lora.cli.options import add_name, add_nodes, add_price, add_registry, launch_request, run_name
from lora.cli.verbs.train import resolve_profile_flag
from lora.core.errors import UserError
from lora.estimate import MissingFacts, format_plan, plan_for_entry, plan_to_json
from lora.recipe.profiles import PROFILES
from lora.recipe.registry import load_registry
from lora.train.launch import check_request, entry_for


def register(p) -> None:
    add_name(p)
    add_registry(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_price(p)
    g = p.add_argument_group("the machine planned for")
    g.add_argument("--profile", help="plan for this hardware profile instead of the entry's (docs/pods.md); "
                                     "`auto`: this machine's GPUs")
    g.add_argument("--zero", type=int, choices=(1, 2, 3), help="DeepSpeed ZeRO stage (overrides the entry)")
    g.add_argument("--gpus", type=int, help="GPUs per machine (default: the profile's)")
    g.add_argument("--cpu-processes", type=int, default=1, help="cpu entries: training processes")
    add_nodes(g, rank=False)


def run(args: Namespace) -> int:
    registry = load_registry(args.config_json)
    request = launch_request(args, run_name(args))
    resolve_profile_flag(request.profile)
    entry = entry_for(registry, request)
    check_request(request, entry)
    profile = PROFILES[entry.profile]
    workers = request.cpu_processes if profile.accelerator == "cpu" else request.gpus or max(1, profile.num_gpus)
    try:
        plan = plan_for_entry(registry, entry, num_gpus=workers,
                              num_machines=request.num_machines, usd_per_gpu_hour=args.usd_per_gpu_hour)
    except MissingFacts as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(plan_to_json(plan), indent=2) if args.json else format_plan(plan))
    return 0
