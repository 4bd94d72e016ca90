"""The evaluation run: plan rows × tasks, load each base once, evaluate, write results pair by pair.

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100

Layout of --out:
    pairs/<row>/<task>.json          one finished row×task (written last, atomically: the resume marker)
    predictions/<row>/<task>.jsonl   id, prompt hash, raw output, parsed answer, correct
    results.json / results.csv / results.md   rebuilt at the end of every run from the pairs above
A pair whose pairs/ file exists with the same fingerprint (data, prompt, limit, k-shot examples, adapter
weights, base, precision, metric version, adapter_config.json) is not redone (--force redoes it), so a killed run loses at most one pair.

The same code runs in every rank of a multi-process run (`--processes N`, eval/distributed.py): `world` is
the one-process `Solo` or torch.distributed `Ranks`. Rank 0 alone decides what is left, scores and writes;
each rank generates its token-balanced shard of every pair (eval/shards.py) and rank 0 merges the outputs
in row order, so the files are those of a one-process run.

The plan (Settings, rows × tasks pairs, fingerprints) is eval/run_plan.py; one pair's generation, scoring and
files are eval/pair_eval.py.
"""
from __future__ import annotations

import platform
import sys
import time

from eval import report
from eval import shards as sharding
from eval.discovery import NO_BASE, Adapter, Group
from eval.pair_eval import evaluate_pair
from eval.run_plan import (
    Pair,
    Row,
    Settings,
    adapter_digests,
    fingerprint,
    load_finished,
    pair_paths,
    rows_and_pairs,
)
from eval.tasks import TaskData
from eval.world import RankLost, Solo
from lora.core import compute
from lora.core.errors import describe
from lora.core.files import library_versions

_VERSIONED = {"torch": "torch", "transformers": "transformers", "peft": "peft", "sklearn": "scikit-learn",
              "rouge_score": "rouge-score"}  # results.json key -> distribution


def versions() -> dict:
    found = library_versions(tuple(_VERSIONED.values()))
    return {"python": platform.python_version(), **{key: found[dist] for key, dist in _VERSIONED.items()}}


# ---------------------------------------------------------------- the run: build pairs -> drop finished -> run groups


def drop_finished(pairs: list[Pair], rows: dict[str, Row], datas: dict[str, TaskData], group: Group,
                  settings: Settings) -> list[tuple[Pair, dict]]:
    """Pairs that still need a model, with their fingerprints. Finished ones (same fingerprint) are read
    back into their rows; error rows need nothing."""
    todo: list[tuple[Pair, dict]] = []
    digests: dict[str, dict] = {}
    for p in pairs:
        row = rows[p.row]
        if row.error:
            continue
        if p.adapter is not None and p.adapter.name not in digests:
            digests[p.adapter.name] = adapter_digests(p.adapter)
        fp = fingerprint(p, datas[p.task], group, settings, digests.get(p.adapter.name) if p.adapter else {})
        done = None if settings.force else load_finished(pair_paths(settings.out, p.row, p.task)[0], fp)
        if done is not None:
            row.results[p.task] = done
        else:
            todo.append((p, fp))
    return todo


def by_model(todo: list[tuple[Pair, dict]]) -> list[tuple[Adapter | None, list[tuple[Pair, dict]]]]:
    """The base's pairs first (before any adapter is injected), then one adapter at a time, all its tasks."""
    units: dict[str | None, tuple[Adapter | None, list]] = {None: (None, [])}
    for p, fp in todo:
        key = p.adapter.name if p.adapter is not None else None
        units.setdefault(key, (p.adapter, []))[1].append((p, fp))
    return [u for u in units.values() if u[1]]


def _say(world: Solo, line: str) -> None:
    """An error line on stderr, once per run (rank 0), not once per rank."""
    if world.rank == 0:
        print(line, file=sys.stderr)


def _agree(world: Solo, error: str | None) -> str | None:
    """Every rank's outcome of one step (a load, an attach); the first failure, naming its rank when
    there are several ranks, or None when all succeeded, so all ranks take the same branch."""
    errors = world.all_gather(error)
    for rank, err in enumerate(errors):
        if err is not None:
            return err if world.size == 1 else f"{err} (rank {rank})"
    return None


def evaluate_unit(host, adapter: Adapter | None, items: list[tuple[Pair, dict]], rows: dict[str, Row],
                  datas: dict[str, TaskData], settings: Settings, world: Solo) -> None:
    """Evaluate one model's pairs (the base, or one adapter attached for the duration). A broken adapter
    is one error row; a failed pair is one error cell; the rest go on."""
    name = adapter.name if adapter is not None else None
    if adapter is not None:
        attached, error = False, None
        try:
            with compute.phase(f"adapter load {name}"):
                host.attach(name, str(adapter.path))
            attached = True
        except Exception as exc:  # noqa: BLE001 - a broken adapter is one error row
            error = describe(exc)
        error = _agree(world, error)
        if error is not None:
            if attached:  # another rank could not load it: every rank drops it
                host.detach(name)
            rows[name].error = f"adapter failed to load: {error}"
            _say(world, f"error: {name}: {rows[name].error}")
            return
    try:
        for p, fp in items:
            try:
                model, ctx = host.model_for(name)
                merge = host.merge_choices.get(name)  # None for the base row and unmerged hosts
                with ctx:
                    result = evaluate_pair(model, host.loaded.tokenizer, p, datas[p.task], settings, fp, world,
                                           merge=merge.record() if merge is not None else None)
            except Exception as exc:  # noqa: BLE001 - one failed cell, the rest go on
                if isinstance(exc, RankLost):  # a rank is gone: nothing left to agree with
                    raise
                result = {"error": f"evaluation failed: {describe(exc)}"}
                _say(world, f"error: {p.row} × {p.task}: {result['error']}")
            rows[p.row].results[p.task] = result
    finally:
        if adapter is not None:
            host.detach(name)


def _fail_group(rows: list[Row], facts: dict, msg: str) -> None:
    facts["error"] = msg
    for r in rows:
        r.error = r.error or msg


def _left_to_do(pairs: list[Pair], by_name: dict[str, Row], datas: dict[str, TaskData], group: Group,
                settings: Settings, world: Solo) -> list[tuple[Pair, dict]]:
    """drop_finished on rank 0 (it alone reads and writes --out); the other ranks follow its list."""
    todo = drop_finished(pairs, by_name, datas, group, settings) if world.rank == 0 else []
    if world.size == 1:
        return todo
    index = {id(p): i for i, p in enumerate(pairs)}
    return [(pairs[i], fp) for i, fp in world.broadcast([(index[id(p)], fp) for p, fp in todo])]


def run_group(group: Group, rows: list[Row], pairs: list[Pair], datas: dict[str, TaskData], settings: Settings,
              world: Solo) -> dict:
    """Evaluate one base model's rows in place; returns the group's facts for results.json."""
    facts = {"base_model": group.base.ref, "base_path": group.base.path, "error": group.base.error,
             "load_seconds": None, "dtype": None,
             "precision": settings.precision.record if settings.precision is not None else None}
    if group.base.error:
        if group.base.ref != NO_BASE:  # the adapters of the no-base group already say why
            _say(world, f"error: {group.base.error}; skipping {len(group.adapters)} adapter(s) of this group")
        _fail_group(rows, facts, group.base.error)
        return facts
    by_name = {r.name: r for r in rows}
    todo = _left_to_do(pairs, by_name, datas, group, settings, world)
    if not todo:
        return facts
    from eval import engine

    if not settings.progress:
        engine.disable_progress_bars()
    loaded, error = None, None
    try:
        with compute.phase(f"base load {group.base.ref}"):
            loaded = engine.load_base(group.base.path, settings.base_quant,
                                      dtype=settings.precision.dtype if settings.precision is not None else None)
    except Exception as exc:  # noqa: BLE001 - the group fails, the others go on
        error = describe(exc)
    error = _agree(world, error)
    if error is not None:
        msg = f"base model {group.base.ref} failed to load: {error}"
        _say(world, f"error: {msg}")
        _fail_group(rows, facts, msg)
        return facts
    facts.update(load_seconds=round(loaded.load_seconds, 3), dtype=loaded.dtype)
    host = engine.AdapterHost(loaded, merge=settings.merge_lora)
    for adapter, items in by_model(todo):
        evaluate_unit(host, adapter, items, by_name, datas, settings, world)
    return facts


def run(groups: list[Group], datas: dict[str, TaskData], settings: Settings,
        world: Solo | None = None) -> tuple[dict | None, int]:
    """Evaluate everything; returns (results.json content, number of error rows and cells); on ranks
    other than 0, (None, 0): rank 0 holds the results."""
    world = world if world is not None else Solo()
    t_start = time.monotonic()
    many = sum(1 for g in groups if g.base.error is None) > 1
    all_rows: list[Row] = []
    group_facts: list[dict] = []
    # Peak RSS / GPU memory, CPU / GPU use and wall time per phase (base load, generate, scoring): lora/core/compute.py.
    # With several processes each samples its own; rank 0's record is the one written.
    with compute.Sampler() as sampler:
        for group in groups:
            rows, pairs = rows_and_pairs(group, datas, settings, many)
            all_rows.extend(rows)
            group_facts.append(run_group(group, rows, pairs, datas, settings, world))
    if world.rank != 0:
        return None, 0
    results = report.build_results(all_rows, datas, group_facts, settings, versions(), time.monotonic() - t_start,
                                   compute=sampler.record().model_dump(mode="json"))
    results["timings"]["processes"] = world.size
    if world.size > 1:  # per rank: pairs, rows, token cost (what the shards balance), seconds generating
        results["timings"]["ranks"] = sharding.rank_totals(world.shards, world.size)
    errors = sum(1 for r in results["rows"] if r["error"]) + sum(
        1 for r in results["rows"] for v in r["results"].values() if "error" in v)
    return results, errors
