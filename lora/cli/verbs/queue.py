"""finlora queue NAME … | --match GLOB: train entries one after another, evaluate each adapter, one table at the end.

    finlora queue sentiment_smollm2_cpu headline_smollm2_cpu --eval end
    finlora queue --match 'sentiment_*_cpu' --dry-run
    finlora queue a b c --on-finish sudo shutdown -h now     # stop the pod when the queue ends, whatever happened

Survives a lost pod: the same command resumes (finished runs are not retrained). docs/queue.md.
"""
from __future__ import annotations

from argparse import Namespace

from lora.cli.options import add_machine, add_price, add_queue, add_registry
from lora.core.errors import UserError
from lora.pod import queue
from lora.pod.queue_plan import QueueOptions
from lora.recipe.registry import load_registry


def register(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="entries to train, in this order")
    p.add_argument("--match", metavar="GLOB", help="queue every entry whose name matches (e.g. 'sentiment_*_cpu')")
    add_registry(p)
    add_queue(p)
    add_price(p)
    add_machine(p, profile=False, precision=False, nodes=None)


def options(args: Namespace, **sweep) -> QueueOptions:
    if args.on_finish is not None and not args.on_finish:
        raise UserError("--on-finish needs a command after it (it is the last flag: --on-finish CMD ARG …)")
    return QueueOptions(
        names=tuple(getattr(args, "names", ())), match=getattr(args, "match", None), queue_name=args.queue_name,
        eval_mode=args.eval_mode, eval_limit=args.eval_limit, stop_on_error=args.stop_on_error,
        on_finish=tuple(args.on_finish or ()), yes=args.yes, dry_run=args.dry_run, lock_wait=args.lock_wait,
        usd_per_gpu_hour=args.usd_per_gpu_hour, gpus=args.gpus, cpu_processes=args.cpu_processes, zero=args.zero,
        adapters_dir=args.adapters_dir, recipes_dir=args.recipes_dir, command=tuple(args.invocation), **sweep,
    )


def run(args: Namespace) -> int:
    if not args.names and args.match is None:
        raise UserError("name the entries to queue, or --match GLOB (finlora list shows them)")
    return queue.main(load_registry(args.config_json), options(args))
