"""An evaluation run's plan: its Settings, the rows × tasks pairs, and what each pair's result depends on.

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100 --dry-run   # the plan only

Pure but for hashing the adapters' files and reading finished pair files: `rows_and_pairs` lays out one base
model's rows (one base row per prompt format its adapters use) and pairs, `fingerprint` is what a finished
pair's result depends on (a change redoes the pair), `pair_paths` / `load_finished` are its files under --out.
eval/runner.py runs the plan.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.discovery import ADAPTER_CONFIG, Adapter, Group, prompt_for, slugify
from eval.shots import TaskShots
from eval.tasks import TaskData
from lora.core.files import adapter_weights, sha256_file
from lora.core.prompts import PROMPT_FORMATS

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
    merge_lora: str = "auto"  # --merge-lora auto|on|off: adapters' rows on merged weights (eval.merged_lora.merge_choice)


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
