"""finlora train NAME: registry entry -> recipes/<name>.yaml -> accelerate launch -m axolotl.cli.train.

    finlora train sentiment_smollm2_cpu                       # the CPU demo
    finlora train sentiment_smollm2_cpu --dry-run             # render, validate with axolotl, print the command
    finlora train sentiment_llama_3_1_8b_8bits_r8             # a 4xA5000 pod: accelerate + DeepSpeed ZeRO-1
    finlora train sentiment_smollm2_cpu --cpu-processes 2     # two CPU training processes (torchrun, gloo)

Under the name's lock the launch reads the machine and the output folder, decides everything (recipe, argv,
environment, resume point; lora/train/launch.py) and then runs it. The exit code is the training process's own.
"""
from __future__ import annotations

import shlex
from argparse import Namespace

from lora.cli.options import add_machine, add_name, add_registry, launch_inputs
from lora.recipe.render import validate_with_axolotl
from lora.train.launch import decide, execute, gather_facts, write_recipe
from lora.train.lock import RunLock


def register(p) -> None:
    add_name(p)
    add_registry(p)
    p.add_argument("--dry-run", action="store_true", help="render and validate; print the command; launch nothing")
    p.add_argument("--fresh", action="store_true", help="start over: move the old output folder aside (never deleted)")
    add_machine(p)


def run(args: Namespace) -> int:
    registry, request, entry = launch_inputs(args)
    if request.dry_run:
        plan = decide(request, registry, entry, gather_facts(registry, request, entry))
        validate_with_axolotl(plan.recipe_text, entry)
        write_recipe(plan)
        print(f"recipe: {plan.recipe_ref} (validated by axolotl)")
        print(f"command: {shlex.join(plan.argv)}")
        return 0
    # The lock comes first: nothing is read, moved or written for this name while another launch runs.
    with RunLock(request.adapters_dir, request.name) as lock:
        plan = decide(request, registry, entry, gather_facts(registry, request, entry))
        return execute(plan, lock)
