"""The world an eval run sees: one process (`Solo`, every collective the identity) or torch.distributed ranks.

    finlora eval lora_adapters/ --processes 2   # eval/distributed.py starts the ranks; each runs with Ranks

eval/runner.py is written against this interface only, so one code path serves both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from eval.shards import ShardResult
from lora.core.errors import describe

DEFAULT_RANK_TIMEOUT = 1800  # seconds; torch's own default for gloo


class RankLost(RuntimeError):
    """A collective failed: another rank died, or did not answer within --rank-timeout."""


@dataclass
class Solo:
    """The one-process world: every collective is the identity."""
    rank: int = 0
    size: int = 1
    shards: list[list[ShardResult]] = field(default_factory=list)  # per pair (rank 0): for results.json

    def gather(self, obj):
        return [obj]

    def all_gather(self, obj):
        return [obj]

    def broadcast(self, obj):
        return obj


class Ranks(Solo):
    """torch.distributed (gloo) with every collective's failure turned into one RankLost line."""

    def __init__(self, timeout_s: float):
        import torch.distributed as dist

        self.dist = dist
        self.timeout_s = timeout_s
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        super().__init__(rank=dist.get_rank(), size=dist.get_world_size())

    def _call(self, what: str, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError subclasses with multi-line text
            raise RankLost(f"{what}: no answer from another rank (it died, or took longer than --rank-timeout "
                           f"{self.timeout_s:g} s): {describe(exc)}") from exc

    def gather(self, obj):
        out = [None] * self.size if self.rank == 0 else None
        self._call("gathering a pair's outputs", lambda: self.dist.gather_object(obj, out, dst=0))
        return out

    def all_gather(self, obj):
        out = [None] * self.size
        self._call("agreeing on a load", lambda: self.dist.all_gather_object(out, obj))
        return out

    def broadcast(self, obj):
        box = [obj]
        self._call("sharing the plan", lambda: self.dist.broadcast_object_list(box, src=0))
        return box[0]

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()
