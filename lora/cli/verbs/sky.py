"""finlora sky NAME: write recipes/<name>.sky.yaml and launch it on a rented GPU machine through SkyPilot.

    finlora sky formula_llama_3_1_8b_8bits_r8 --bucket my-adapters --down
    finlora sky formula_llama_3_1_8b_8bits_r8 --spot --bucket my-adapters      # a managed spot job
    finlora sky formula_llama_3_1_8b_8bits_r8 --dry-run                        # write the task only

The rented machine trains the entry's own profile; SkyPilot supplies each machine's rank and the main
machine's address. SkyPilot lives in .venv-sky (make setup-sky); a dry run does not need it. docs/cloud.md.
"""
from __future__ import annotations

import os
from argparse import Namespace

from lora.cli.options import add_machine, add_name, add_registry, add_sky, run_name
from lora.pod import sky
from lora.recipe.registry import load_registry
from lora.train.launch import LaunchRequest, entry_for


def register(p) -> None:
    add_name(p)
    add_registry(p)
    p.add_argument("--dry-run", action="store_true", help="write the SkyPilot task, launch nothing")
    add_sky(p)
    add_machine(p, title="the rented machines", profile=False, cpu=False, precision=False, nodes="count")


def run(args: Namespace) -> int:
    """Everything is checked before the task file is written; a launch needs SkyPilot, a dry run does not."""
    registry = load_registry(args.config_json)
    name = run_name(args)
    entry = entry_for(registry, LaunchRequest(name=name, zero=args.zero, recipes_dir=args.recipes_dir,
                                              adapters_dir=args.adapters_dir))
    request = sky.SkyRequest(
        name=name, cloud=args.cloud, spot=args.spot, num_machines=args.num_machines, gpus=args.gpus,
        zero=args.zero, down=args.down, bucket=args.bucket, store=args.store, volume=args.volume,
        dry_run=args.dry_run, config_json=args.config_json, recipes_dir=args.recipes_dir,
    )
    task = sky.sky_inputs(registry, entry, request, dict(os.environ))
    executable = None if args.dry_run else sky.find_sky()
    return sky.launch(task, executable, dict(os.environ))
