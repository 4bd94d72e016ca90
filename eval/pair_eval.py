"""One pair evaluated: generate its rows (in one process, or this rank's shard), score them, write its files.

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100

`evaluate_pair` writes predictions/<row>/<task>.jsonl, then pairs/<row>/<task>.json last (atomically: the
resume marker). With several ranks each generates its token-balanced shard (eval/shards.py) and rank 0 merges,
scores and writes. eval/runner.py calls it for every pair left to do.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time

from eval import shards as sharding
from eval.bertscore import bertscore
from eval.run_plan import Pair, Settings, pair_paths
from eval.tasks import TaskData
from eval.world import Solo
from lora.core import compute
from lora.core.errors import describe
from lora.core.files import utc_now_iso, write_atomic, write_json_atomic
from lora.core.prompts import apply


def _generate(model, tokenizer, prompts: list[str], pair: Pair, data: TaskData, settings: Settings):
    from tqdm import tqdm

    from eval.generation import generate

    task = data.task
    bar = tqdm(total=len(prompts), desc=f"{pair.row} × {task.name}", unit="ex", file=sys.stderr,
               disable=not settings.progress, dynamic_ncols=True)
    try:
        return generate(model, tokenizer, prompts, task.max_new_tokens, stop_at_newline=task.kind.stop_at_newline,
                        batch_size=settings.batch_size, progress=bar, prefix_cache=settings.prefix_cache)
    finally:
        bar.close()


def score_outputs(data: TaskData, outputs: list[str], bertscore_model: str | None,
                  prompts: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-row details. The kind says which part of prompt + generation is the answer (FinLoRA:
    the text after the last "Answer:"); prompts default to the raw contexts."""
    kind = data.task.kind
    targets = [r["target"] for r in data.rows]
    if kind.extract is not None:
        prompts = prompts if prompts is not None else [r["context"] for r in data.rows]
        answers = [kind.answer(p, o) for p, o in zip(prompts, outputs, strict=True)]
    else:
        answers = outputs
    metrics, per_row = kind.score(answers, targets, data.labels, encoder=bertscore_model)
    if kind.extract is not None:
        for r, a in zip(per_row, answers, strict=True):
            r["answer"] = a
    if data.task.kind.free_text and bertscore_model:
        from eval.metrics import bootstrap_mean

        f1s = bertscore(outputs, targets, bertscore_model)
        metrics["bertscore_f1"] = sum(f1s) / len(f1s)
        metrics.setdefault("ci", {})["bertscore_f1"] = bootstrap_mean(f1s)
        for r, f in zip(per_row, f1s, strict=True):
            r["bertscore_f1"] = f
    return metrics, per_row


def _generate_shard(model, tokenizer, prompts: list[str], pair: Pair, data: TaskData, settings: Settings,
                    world: Solo):
    """This rank's share of the pair's rows (whole batches of the one-process batch plan, balanced by
    tokens), generated; everything that can fail is caught into the result, so every rank reaches the
    gather. Rank 0 gets (outputs in row order, GenStats, the shards); the others get None."""
    from eval.generation import GenStats, batches_by_length, encode_for_model

    task = data.task
    t0 = time.monotonic()
    try:
        encoded, _ = encode_for_model(model, tokenizer, prompts, task.max_new_tokens)
        lengths = [len(e) for e in encoded]
        batches = batches_by_length(lengths, settings.batch_size)
        costs = [sharding.batch_cost(lengths, b, task.max_new_tokens) for b in batches]
        mine = sharding.assign(batches, costs, world.size)[world.rank]
        shard = sharding.ShardResult(world.rank, mine, [], tokens=sharding.shard_tokens(lengths, batches, mine,
                                                                                       task.max_new_tokens))
        if mine:
            outputs, stats = _generate(model, tokenizer, [prompts[i] for i in mine], pair, data, settings)
            shard.outputs, shard.new_tokens, shard.truncated_prompts = outputs, stats.new_tokens, stats.truncated_prompts
            shard.prompt_tokens, shard.shared_prefix_tokens = stats.prompt_tokens, stats.shared_prefix_tokens
    except Exception as exc:  # noqa: BLE001 - sent to rank 0, which makes it the pair's error cell
        shard = sharding.ShardResult(world.rank, [], [], error=describe(exc))
    shard.seconds = round(time.monotonic() - t0, 3)
    gathered = world.gather(shard)
    if world.rank != 0:
        return None
    error = sharding.first_error(gathered)
    if error is not None:
        raise RuntimeError(error)
    outputs = sharding.merge(len(prompts), gathered)
    working = [s for s in gathered if s.rows]
    stats = GenStats(time.monotonic() - t0, sum(s.new_tokens for s in gathered),
                     sum(s.truncated_prompts for s in gathered), sum(s.prompt_tokens for s in gathered),
                     # each rank reuses the prefix its own rows share; the pair reports what all of them reused
                     min((s.shared_prefix_tokens for s in working), default=0))
    return outputs, stats, gathered


def evaluate_pair(model, tokenizer, pair: Pair, data: TaskData, settings: Settings, fp: dict,
                  world: Solo, merge: dict | None = None) -> dict | None:
    """Generate, score, write predictions then the pair file (both atomic); return the pair result.
    Several ranks: each generates its shard; rank 0 merges, scores and writes; the others return None.
    merge: an adapter's MergeChoice record (merged weights or not, and why), written as the result's lora_merge."""
    task = data.task
    prompts = [apply(pair.template, pair.shots.context(r) if pair.shots else r["context"]) for r in data.rows]
    with compute.phase(f"generate {pair.row} × {task.name}"):
        if world.size == 1:
            outputs, stats = _generate(model, tokenizer, prompts, pair, data, settings)
            ranks = None
        else:
            done = _generate_shard(model, tokenizer, prompts, pair, data, settings, world)
            if done is None:
                return None
            outputs, stats, gathered = done
            world.shards.append(gathered)
            ranks = [{"rank": s.rank, "rows": len(s.rows), "tokens": s.tokens, "seconds": s.seconds}
                     for s in gathered]
    with compute.phase(f"scoring {pair.row} × {task.name}"):
        metrics, per_row = score_outputs(data, outputs, settings.bertscore_model, prompts)
    lines = [
        json.dumps({"id": r["id"], "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                    "output": out, "target": r["target"], **detail}, ensure_ascii=False)
        for r, prompt, out, detail in zip(data.rows, prompts, outputs, per_row, strict=True)
    ]
    pair_file, pred_file = pair_paths(settings.out, pair.row, task.name)
    write_atomic(pred_file, "\n".join(lines) + "\n")
    timing = {"seconds": round(stats.seconds, 3), "samples_per_second": round(len(prompts) / stats.seconds, 3)
              if stats.seconds > 0 else None, "new_tokens": stats.new_tokens,
              "prompt_tokens": stats.prompt_tokens, "shared_prefix_tokens": stats.shared_prefix_tokens}
    if ranks is not None:
        timing["ranks"] = ranks  # per rank: its rows, their token cost (the balance), seconds generating
    result = {
        "row": pair.row, "task": task.name, "prompt_format": pair.prompt_format, "base_row": pair.base_row,
        "scoring": settings.scoring, "metrics": metrics,
        "timing": timing,
        "truncated_prompts": stats.truncated_prompts,
        **({"lora_merge": merge} if merge is not None else {}),
        "predictions": pred_file.relative_to(settings.out).as_posix(),
        "finished_at": utc_now_iso(),
        "fingerprint": fp,
    }
    write_json_atomic(pair_file, result)  # last: its presence means the pair is finished
    return result
