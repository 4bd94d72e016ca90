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
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from eval import report
from eval import shards as sharding
from eval.bertscore import bertscore
from eval.discovery import ADAPTER_CONFIG, NO_BASE, Adapter, Group, prompt_for, slugify
from eval.shots import TaskShots
from eval.tasks import TaskData
from eval.world import RankLost, Solo
from lora.core import compute
from lora.core.errors import describe
from lora.core.files import adapter_weights, library_versions, sha256_file, utc_now_iso, write_atomic, write_json_atomic
from lora.core.prompts import PROMPT_FORMATS, apply

# bump when generation or metric rules change: finished pairs are then redone.
# 2: FinLoRA's answer budgets (fpb 10, ...), entity/exact kinds, --scoring finlora.
EVAL_VERSION = 2
QUANT_CHOICES = (4, 8, 16)  # --base-quant; here, not in eval/engine.py, so the parser imports no torch


@dataclass
class Settings:
    out: Path
    limit: int | None = None
    shots: int = 0  # --shots: examples in the base row's prompts (adapters stay zero-shot)
    shot_seed: int = 0
    shot_plans: dict[str, TaskShots] = field(default_factory=dict)  # task -> its examples (eval/shots.py)
    per_adapter_tasks: bool = False  # no --tasks: each adapter on its family's tasks (eval/adapter_tasks.py)
    batch_size: int = 8
    base_quant: int | None = None
    no_base: bool = False
    prompt_format: str | None = None
    force: bool = False
    bertscore_model: str | None = None
    scoring: str = "standard"  # "finlora": FinLoRA's harness rules (raw prompt, its answer budgets and scorers)
    progress: bool = True
    argv: list[str] = field(default_factory=list)
    precision: object = None  # eval.engine.EvalPrecision (--precision resolved for this machine); None: load defaults
    prefix_cache: bool | None = None  # --prefix-cache (None: auto, fp32 models only): shared prefix's KV cache
    merge_lora: str = "auto"  # --merge-lora auto|on|off: adapters' rows on merged weights (eval.engine.merge_choice)


@dataclass
class Pair:
    """One cell of the table: a row (base or adapter) × a task, with the prompt it is evaluated with."""
    row: str
    task: str
    prompt_format: str
    template: str
    adapter: Adapter | None  # None: the base row
    base_row: str | None = None  # for adapters: the base row it is compared with
    shots: TaskShots | None = None  # k-shot examples in front of each context (base rows with --shots)


@dataclass
class Row:
    name: str
    kind: str  # "base" | "adapter"
    group: Group
    adapter: Adapter | None = None
    error: str | None = None
    results: dict = field(default_factory=dict)  # task -> pair result (or {"error": ...})
    tasks: tuple[str, ...] = ()  # the tasks it is evaluated on (the others show "–")
    shots: int = 0


def _prompt_for(adapter: Adapter | None, task_format: str | None, settings: Settings) -> tuple[str, str]:
    """FinLoRA's harness feeds every model, adapters included, the raw context; standard scoring uses the
    prompt the adapter was trained with (discovery.prompt_for)."""
    if settings.scoring == "finlora":
        return "raw", PROMPT_FORMATS["raw"]
    return prompt_for(adapter, task_format, settings.prompt_format)


def _adapter_pairs(group: Group, datas: dict[str, TaskData], settings: Settings) -> tuple[list[Pair], dict]:
    """Every adapter × its task pair, and task -> {format name: template} the base row needs to match them.
    An adapter's tasks: adapter.tasks (its family's, eval/adapter_tasks.py), or every loaded task when None
    (--tasks). The base row gets the union of the evaluable adapters' tasks; alone, every loaded task."""
    pairs: list[Pair] = []
    formats: dict[str, dict[str, str]] = {}
    for a in group.adapters:
        for t, d in datas.items():
            if a.tasks is not None and t not in a.tasks:
                continue
            name, template = _prompt_for(a, d.task.prompt_format, settings)
            if a.error is None:
                formats.setdefault(t, {})[name] = template
            pairs.append(Pair(a.name, t, name, template, a))
    if not any(a.error is None for a in group.adapters):  # the base alone, with the default prompt
        for t, d in datas.items():
            formats[t] = dict([_prompt_for(None, d.task.prompt_format, settings)])
    formats = {t: formats[t] for t in datas if t in formats}  # registry order
    return pairs, formats


def wants_base(group: Group, settings: Settings) -> bool:
    """A base row needs a usable base and something to compare with: no adapters (the base alone) or at
    least one adapter that is not already an error row (a broken adapter adds only its error row)."""
    if settings.no_base or group.base.error is not None:
        return False
    return not group.adapters or any(a.error is None for a in group.adapters)


def rows_and_pairs(group: Group, datas: dict[str, TaskData], settings: Settings, many_groups: bool) -> tuple[list[Row], list[Pair]]:
    """Rows and pairs for one base model (pure). The base row is evaluated with the prompt the group's
    adapters use for that task; when they disagree, one base row per prompt format."""
    adapter_pairs, formats = _adapter_pairs(group, datas, settings)
    all_formats = sorted({f for per in formats.values() for f in per})
    suffix = f" ({Path(group.base.ref).name})" if many_groups else ""

    shots = f" {settings.shots}-shot" if settings.shots else ""

    def base_name(fmt: str) -> str:
        return "base" + shots + (f" [{fmt}]" if len(all_formats) > 1 else "") + suffix

    rows: list[Row] = []
    pairs: list[Pair] = []
    base = wants_base(group, settings) and bool(formats)
    if base:
        rows += [Row(base_name(fmt), "base", group, shots=settings.shots,
                     tasks=tuple(t for t, per in formats.items() if fmt in per)) for fmt in all_formats]
        pairs += [Pair(base_name(fmt), t, fmt, template, None,
                       shots=settings.shot_plans.get(t) if settings.shots else None)
                  for t, per in formats.items() for fmt, template in per.items()]
    rows += [Row(a.name, "adapter", group, adapter=a, error=a.error,
                 tasks=tuple(p.task for p in adapter_pairs if p.adapter is a)) for a in group.adapters]
    for p in adapter_pairs:
        p.base_row = base_name(p.prompt_format) if base else None
        pairs.append(p)
    return rows, pairs


def fingerprint(pair: Pair, data: TaskData, group: Group, settings: Settings, adapter_digests: dict) -> dict:
    """What a finished pair's result depends on; a change in any of it redoes the pair."""
    t = data.task
    return {
        "eval_version": EVAL_VERSION,
        "scoring": settings.scoring,  # a finished standard pair is not a finished finlora pair
        "task": {"name": t.name, "kind": t.kind.name, "labels": list(data.labels or []),
                 "max_new_tokens": t.max_new_tokens, "data_sha256": data.sha256},
        "limit": settings.limit,
        **_shots_fingerprint(pair, settings),
        "template": pair.template,
        "base": group.base.path,
        "base_quant": settings.base_quant,
        # lora_alpha, r, target_modules live in adapter_config.json: the same weights scale differently
        "adapter_weights_sha256": adapter_digests.get("weights"),
        "adapter_config_sha256": adapter_digests.get("config"),
        "bertscore_model": settings.bertscore_model if t.kind.free_text or t.kind.needs_encoder else None,
        # only when it differs from the load default (fp32 on CPU), so pairs finished before --precision stay finished
        **({"precision": settings.precision.fingerprint}
           if settings.precision is not None and settings.precision.fingerprint else {}),
    }


def _shots_fingerprint(pair: Pair, settings: Settings) -> dict:
    """k-shot keys, only when used (so --shots 0 keeps the fingerprints of runs before --shots): the base
    pair's examples; for every row of a task whose examples are test rows, which rows are held out."""
    fp = {}
    if pair.shots is not None:
        fp["shots"] = pair.shots.fingerprint()
    plan = settings.shot_plans.get(pair.task) if settings.shots else None
    if plan is not None and plan.held_out:
        fp["held_out_ids"] = list(plan.held_out) + list(plan.duplicates)
    return fp


def adapter_digests(adapter: Adapter | None) -> dict:
    if adapter is None:
        return {}
    weights = adapter_weights(adapter.path)
    return {"weights": sha256_file(weights) if weights else None,
            "config": sha256_file(adapter.path / ADAPTER_CONFIG)}


def pair_paths(out: Path, row: str, task: str) -> tuple[Path, Path]:
    return out / "pairs" / slugify(row) / f"{task}.json", out / "predictions" / slugify(row) / f"{task}.jsonl"


def load_finished(path: Path, fp: dict) -> dict | None:
    """The pair file's result when it was made with this fingerprint; a damaged file is redone."""
    try:
        done = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return done if isinstance(done, dict) and done.get("fingerprint") == fp else None


def _generate(model, tokenizer, prompts: list[str], pair: Pair, data: TaskData, settings: Settings):
    from tqdm import tqdm

    from eval.engine import generate

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
    from eval.engine import GenStats, batches_by_length, encode_for_model

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
