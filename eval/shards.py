"""Split one pair's rows over N processes by token count, and merge their outputs back in row order (pure).

    python -m eval lora_adapters/ --processes 4      # eval/distributed.py launches the ranks; this plans their work

A one-process run generates a pair in batches (eval/generation.py batches_by_length: longest prompts first,
`--batch-size` rows each). A shard here is a set of whole batches of that same plan, so every batch a
rank generates holds the same rows, left-padded to the same width, as in the one-process run: the same
computation, hence the same outputs, whatever the number of processes. Batches go to the rank with the
fewest tokens so far (largest batch first), where a batch costs its padded prompt tokens plus its answer
budget (rows × (width + max_new_tokens)): prompts differ 5× in length between tasks and several-fold within
one, so equal row counts would not finish together. No torch here: tested fast (tests/eval/test_distributed.py).
"""
from __future__ import annotations

from dataclasses import dataclass


def batch_cost(lengths: list[int], batch: list[int], max_new_tokens: int) -> int:
    """Tokens a batch processes: every row padded to the longest prompt, plus each row's answer budget."""
    return len(batch) * (max(lengths[i] for i in batch) + max_new_tokens)


def assign(batches: list[list[int]], costs: list[int], ranks: int) -> list[list[int]]:
    """Each rank's rows (ascending), made of whole batches: largest batch first to the least-loaded rank
    (ties: the lower rank), so the shards' token counts differ by at most one batch. Deterministic."""
    if ranks < 1:
        raise ValueError("ranks must be at least 1")
    if len(batches) != len(costs):
        raise ValueError("one cost per batch")
    load = [0] * ranks
    rows: list[list[int]] = [[] for _ in range(ranks)]
    for b in sorted(range(len(batches)), key=lambda b: (-costs[b], b)):
        r = min(range(ranks), key=lambda r: (load[r], r))
        load[r] += costs[b]
        rows[r].extend(batches[b])
    return [sorted(r) for r in rows]


def shard_tokens(lengths: list[int], batches: list[list[int]], shard: list[int], max_new_tokens: int) -> int:
    """The cost of the batches that make up one shard (what `assign` balanced)."""
    mine = set(shard)
    return sum(batch_cost(lengths, b, max_new_tokens) for b in batches if b and b[0] in mine)


@dataclass
class ShardResult:
    """What a rank sends back for one pair: its rows' outputs, or the one-line error that stopped it."""
    rank: int
    rows: list[int]
    outputs: list[str]
    seconds: float = 0.0
    new_tokens: int = 0
    truncated_prompts: int = 0
    tokens: int = 0  # the shard's cost (batch_cost summed): what the balance was made on
    prompt_tokens: int = 0
    shared_prefix_tokens: int = 0  # the prefix this rank's prompts share (eval.generation's KV reuse)
    error: str | None = None


def merge(n: int, shards: list[ShardResult]) -> list[str]:
    """The n outputs in row order. Every row must come back exactly once (a mismatch is a bug, not a
    result: ValueError, so the pair becomes an error cell rather than a wrong file)."""
    outputs: list[str | None] = [None] * n
    for s in shards:
        if len(s.rows) != len(s.outputs):
            raise ValueError(f"rank {s.rank} sent {len(s.outputs)} outputs for {len(s.rows)} rows")
        for i, out in zip(s.rows, s.outputs, strict=True):
            if not 0 <= i < n or outputs[i] is not None:
                raise ValueError(f"rank {s.rank} sent row {i} twice or out of range (0..{n - 1})")
            outputs[i] = out
    missing = [i for i, o in enumerate(outputs) if o is None]
    if missing:
        raise ValueError(f"{len(missing)} row(s) came back from no rank (e.g. row {missing[0]})")
    return [o for o in outputs if o is not None]


def first_error(shards: list[ShardResult]) -> str | None:
    """The lowest rank's error, naming the rank, when any rank failed its shard."""
    for s in sorted(shards, key=lambda s: s.rank):
        if s.error is not None:
            return f"rank {s.rank}: {s.error}"
    return None


def rank_totals(per_pair: list[list[ShardResult]], ranks: int) -> list[dict]:
    """Per rank over the whole run: pairs, rows and tokens generated, seconds spent generating."""
    totals = [{"rank": r, "pairs": 0, "rows": 0, "tokens": 0, "new_tokens": 0, "generate_seconds": 0.0}
              for r in range(ranks)]
    for shards in per_pair:
        for s in shards:
            t = totals[s.rank]
            t["pairs"] += 1
            t["rows"] += len(s.rows)
            t["tokens"] += s.tokens
            t["new_tokens"] += s.new_tokens
            t["generate_seconds"] += s.seconds
    for t in totals:
        t["generate_seconds"] = round(t["generate_seconds"], 3)
    return totals
