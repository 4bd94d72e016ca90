"""finlora sweep NAME KEY=V1,V2 …: train the product of these values over one entry, as a queue.

    finlora sweep sentiment_smollm2_cpu lora_r=4,8 learning_rate=1e-3,2e-3 --dry-run
    finlora sweep sentiment_smollm2_cpu lora_r=4,8,16 --eval end

The derived entries live in the queue's own registry file (the registry is not changed). docs/queue.md.
"""
from __future__ import annotations

from argparse import Namespace

from lora.cli.options import add_machine, add_price, add_queue, add_registry
from lora.cli.verbs.queue import options
from lora.core.errors import UserError
from lora.pod import queue
from lora.recipe.registry import load_registry


def register(p) -> None:
    p.add_argument("name", help="the entry to sweep over")
    p.add_argument("sweep", nargs="*", metavar="KEY=V1,V2", help="values of a registry key (the product is queued)")
    add_registry(p)
    add_queue(p)
    add_price(p)
    add_machine(p, profile=False, precision=False, nodes=None)


def run(args: Namespace) -> int:
    if "=" in args.name:
        raise UserError(f"a sweep needs the entry to sweep first: finlora sweep NAME {args.name} "
                        "(python finetune.py NAME --sweep KEY=V1,V2)")
    if not args.sweep:
        raise UserError(f"give the values to sweep: finlora sweep {args.name} KEY=V1,V2 (e.g. lora_r=4,8)")
    opts = options(args, sweep=tuple(args.sweep), sweep_base=args.name)
    return queue.main(load_registry(args.config_json), opts)
