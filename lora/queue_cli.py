"""The queue flags of `python finetune.py` (lora/cli.py adds them): --queue, --match, --sweep, --eval, ….

    python finetune.py --queue a b c --eval end --on-finish sudo shutdown -h now
    python finetune.py tiny --sweep lora_r=4,8 --dry-run

Flags that make no sense together are one line and exit 2 (lora/errors.UserError) before anything
runs; `queue_options` turns the parsed flags into lora/queue.py's QueueOptions. docs/queue.md.
"""
from __future__ import annotations

import argparse
import math

from lora.errors import UserError
from lora.queue import QueueOptions
from lora.sweep import MAX_RUNS_WITHOUT_YES


def add_flags(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("queues and sweeps (docs/queue.md)")
    q.add_argument("--queue", nargs="+", metavar="NAME", help="train these entries one after another")
    q.add_argument("--match", metavar="GLOB", help="queue every entry whose name matches (e.g. 'sentiment_*_cpu')")
    q.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2",
                   help="queue the product of these values over the entry NAME (derived entries, own registry file)")
    q.add_argument("--queue-name", help="the queue's folder under lora_adapters/queues/ (default: from the command)")
    q.add_argument("--eval", dest="eval_mode", choices=("after", "end", "none"), default="after",
                   help="evaluate each adapter on its tasks after its run (default), all at the end, or not")
    q.add_argument("--eval-limit", type=int, metavar="N", help="python -m eval --limit N (first N rows per task)")
    q.add_argument("--stop-on-error", action="store_true", help="stop the queue at the first failed run")
    q.add_argument("--lock-wait", type=float, metavar="SECONDS",
                   help="how long to wait for a run another launch holds (default: as long as it takes)")
    q.add_argument("--yes", action="store_true", help=f"allow a sweep of more than {MAX_RUNS_WITHOUT_YES} runs")
    q.add_argument("--on-finish", nargs=argparse.REMAINDER, metavar="CMD",
                   help="last flag: run CMD (an argv, no shell) when the queue ends, whatever its outcome")


def queue_mode(args: argparse.Namespace) -> bool:
    return bool(args.queue or args.match is not None or args.sweep)


def check_flags(args: argparse.Namespace) -> None:
    if not queue_mode(args):
        given = [f for f, v in (("--queue-name", args.queue_name), ("--eval-limit", args.eval_limit),
                                ("--stop-on-error", args.stop_on_error), ("--lock-wait", args.lock_wait),
                                ("--yes", args.yes), ("--on-finish", args.on_finish)) if v not in (None, False)]
        if given or args.eval_mode != "after":
            raise UserError(f"{given[0] if given else '--eval'} is a queue flag: add --queue, --match or --sweep "
                            "(docs/queue.md)")
        return
    if args.sweep and (args.queue or args.match is not None):
        raise UserError("--sweep expands one entry (the positional NAME); run --queue/--match as a queue of its own")
    if args.sweep and not args.name:
        raise UserError("--sweep needs the entry to sweep: python finetune.py NAME --sweep KEY=V1,V2")
    if not args.sweep and args.name:
        raise UserError(f"a queue takes its runs from --queue/--match; drop the positional {args.name!r} "
                        "or add it to --queue")
    clash = [f for f, v in (("--plan", args.plan), ("--fresh", args.fresh), ("--sky", args.sky),
                            ("--list", args.list)) if v]
    if clash:
        raise UserError(f"{clash[0]} does not combine with a queue; --dry-run prints every run's plan "
                        "(--fresh: retrain one run with `finetune.py NAME --fresh`)")
    if args.num_machines != 1 or args.machine_rank is not None or args.main_process_ip:
        raise UserError("queues run on one machine; multi-node flags are for single launches")
    if args.on_finish is not None and not args.on_finish:
        raise UserError("--on-finish needs a command after it (it is the last flag: --on-finish CMD ARG …)")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise UserError(f"--eval-limit {args.eval_limit}: give a positive number of rows")
    if args.lock_wait is not None and not (math.isfinite(args.lock_wait) and args.lock_wait >= 0):
        raise UserError(f"--lock-wait {args.lock_wait}: give seconds, 0 or more")


def queue_options(args: argparse.Namespace, argv: list[str]) -> QueueOptions:
    return QueueOptions(
        names=tuple(args.queue or ()), match=args.match, sweep=tuple(args.sweep or ()),
        sweep_base=args.name if args.sweep else None, queue_name=args.queue_name, eval_mode=args.eval_mode,
        eval_limit=args.eval_limit, stop_on_error=args.stop_on_error, on_finish=tuple(args.on_finish or ()),
        yes=args.yes, dry_run=args.dry_run, lock_wait=args.lock_wait, usd_per_gpu_hour=args.usd_per_gpu_hour,
        gpus=args.gpus, cpu_processes=args.cpu_processes, zero=args.zero, adapters_dir=args.adapters_dir,
        recipes_dir=args.recipes_dir, command=("python", "finetune.py", *argv),
    )
