"""Data-parallel evaluation: N processes under torchrun's launcher, each with the base loaded once.

    python -m eval lora_adapters/ --processes 4        # a 4-GPU pod (the default there: every visible GPU)
    python -m eval lora_adapters/ --processes 2        # this CPU: 2 processes (gloo), cores split between them

The parent (`finlora eval`: lora/cli/verbs/eval.py, eval/request.py) checks the input and plans the run as a one-process run would, then starts the
ranks with torch's elastic launcher — what `torchrun --standalone --nproc_per_node N` runs — driven through
its Python API (`elastic_launch`), so the parent gets each rank's failure as data and prints it as one line
instead of torchrun's traceback box. Each rank runs eval/runner.py on the same plan with a `Ranks` world:
rank 0 decides which pairs are still to do (resume), every rank loads the base and attaches each adapter,
takes a token-balanced shard of every pair's rows (eval/shards.py), and rank 0 gathers the outputs, merges
them in row order, scores and writes the pair file — the same files a one-process run writes.

Faults. A rank that dies (crash, OOM kill, SIGKILL) is seen by the launcher's monitor within a fraction of
a second; it stops the other ranks (SIGTERM, then SIGKILL) and the parent prints `error: rank R of N
failed: …`. A rank that raises writes its one-line error into the launcher's error file and exits 1.
A rank that hangs alive (a stuck GPU) is caught by the collectives' timeout (`--rank-timeout`, default
30 min: longer than any rank's lead on another within one pair, which the balance keeps small). Collectives
use gloo on CPU tensors on GPU pods too: the exchanged objects are a few KB of text, and gloo's timeout
applies to every operation, where NCCL's needs its watchdog. Files are written by rank 0 only, atomically,
pair file last: a killed run leaves finished pairs and no half-written one; rerunning resumes (any
--processes: the fingerprint does not depend on it).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass

from eval.report import write_results
from eval.runner import run
from eval.world import Ranks
from lora.core.errors import describe, one_line
from lora.core.noise import quiet_library_noise


@dataclass
class RankPlan:
    """Everything a rank needs, decided by the parent (pickled to each rank)."""
    groups: list
    datas: dict
    settings: object  # eval.run_plan.Settings
    threads: int | None  # torch threads per rank; None: OMP_NUM_THREADS as the user set it
    rank_timeout: float
    keep_bitsandbytes: bool = False


def usable_cpus() -> int:
    """CPU cores this process may run on (taskset / cgroup affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def threads_per_rank(processes: int, cpus: int, env: dict) -> int | None:
    """Cores split evenly between ranks; the user's OMP_NUM_THREADS wins (None: leave it)."""
    if "OMP_NUM_THREADS" in env:
        return None
    return max(1, cpus // processes)


def rank_main(plan: RankPlan) -> int | None:
    """One rank (the launcher's entrypoint): run the plan; rank 0 writes the results and returns the exit
    code. An exception is written as one line into the launcher's error file, then exit 1 (no traceback)."""
    world = None
    try:
        import torch

        if plan.threads is not None:
            torch.set_num_threads(plan.threads)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))

        quiet_library_noise(keep_bitsandbytes=plan.keep_bitsandbytes)
        world = Ranks(plan.rank_timeout)
        if world.rank != 0:
            plan.settings.progress = False  # one progress bar (rank 0's shard), not N interleaved
        results, errors = run(plan.groups, plan.datas, plan.settings, world)
        if world.rank != 0:
            return None
        write_results(results, plan.settings.out)
        return 1 if errors else 0
    except Exception as exc:  # noqa: BLE001 - one line for the parent, not a traceback
        _record_error(describe(exc))
        sys.exit(1)
    finally:
        if world is not None:
            world.close()


def _record_error(message: str) -> None:
    """The launcher reads TORCHELASTIC_ERROR_FILE to say why a rank failed (ProcessFailure.message)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"message": message, "timestamp": str(int(time.time()))}, fh)
    else:
        print(f"error: {message}", file=sys.stderr)


def failure_line(rank: int, processes: int, failure) -> str:
    """A torch ProcessFailure as one line: the rank's own message, or the signal that killed it."""
    msg = failure.message
    if isinstance(msg, dict):
        msg = msg.get("message", "")
    if failure.exitcode is not None and failure.exitcode < 0:
        msg = f"killed by signal {-failure.exitcode} ({failure.signal_name()})"

    return one_line(f"rank {rank} of {processes} failed: {msg or f'exit code {failure.exitcode}'}")


def launch(plan: RankPlan, processes: int) -> int:
    """Start `processes` ranks on this machine (torchrun --standalone's setup), wait, return rank 0's exit
    code; a failed rank is one `error:` line and exit 1 (finished pairs stay: rerun to resume)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher logs every worker it stops and each failure, multi-line; the line below says it once.
    for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing.spawn"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0,
                          start_method="spawn")
    resume = f"finished pairs are kept in {plan.settings.out}/pairs; the same command resumes"
    try:
        returned = elastic_launch(config, rank_main)(plan)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"error: {failure_line(rank, processes, failure)}; {resume}", file=sys.stderr)
        return 1
    except SignalException as exc:
        print(f"error: interrupted ({exc.sigval.name}); {resume}", file=sys.stderr)
        return 130
    code = returned.get(0)
    return code if isinstance(code, int) else 1
