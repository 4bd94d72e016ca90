"""finlora plan NAME: per-GPU memory split into parts, fits?, steps, hours and cost on the entry's profile.

    finlora plan formula_llama_3_1_8b_8bits_r8
    finlora plan formula_llama_3_1_8b_8bits_r8 --profile h100x1 --json
    finlora plan sentiment_llama_3_1_8b_8bits_r8 --usd-per-gpu-hour 0.4

Nothing is launched; the method is docs/plan.md.
"""
from __future__ import annotations

import json
from argparse import Namespace

from lora.cli.options import add_machine, add_name, add_price, add_registry, launch_inputs
from lora.core.errors import UserError
from lora.estimate import MissingFacts, format_plan, plan_for_entry, plan_to_json
from lora.recipe.profiles import PROFILES


def register(p) -> None:
    add_name(p)
    add_registry(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_price(p)
    add_machine(p, title="the machine planned for", precision=False, nodes="count")


def run(args: Namespace) -> int:
    registry, request, entry = launch_inputs(args)
    profile = PROFILES[entry.profile]
    workers = request.cpu_processes if profile.accelerator == "cpu" else request.gpus or max(1, profile.num_gpus)
    try:
        plan = plan_for_entry(registry, entry, num_gpus=workers,
                              num_machines=request.num_machines, usd_per_gpu_hour=args.usd_per_gpu_hour)
    except MissingFacts as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(plan_to_json(plan), indent=2) if args.json else format_plan(plan))
    return 0
