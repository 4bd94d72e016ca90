"""Our results.json rows as FinLoRA's table, as data: task rows × method columns, its published number beside ours.

    python -m eval report /tmp/o --layout finlora     # this Table, rendered into /tmp/o/finlora_table.md

Pure (tested with hand-made dicts): `results_problem` says why a dict is not a results.json of ours, `method_of`
which column a row goes in (run.json entry, name, path), `build_table` the Table that eval/finlora_render.py
renders. The rules (which metric a cell shows, how a row maps to a method, duplicates) are in docs/eval.md,
"Results in FinLoRA's layout".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from eval.finlora_published import (
    COMPARED,
    METHODS,
    PUBLISHED_BASE_MODEL,
    PUBLISHED_BERTSCORE_ENCODER,
    PUBLISHED_BERTSCORE_TASKS,
    PUBLISHED_MODELS,
    PUBLISHED_TASKS,
    metric_style,
)
from lora.recipe.registry import variant_name

# FinLoRA's adapter-folder naming (lora/recipe/registry.py Entry.variant writes the same), found in a row name or path.
VARIANT_RE = re.compile(r"(?<![A-Za-z0-9])(4bits|8bits|fp16)_r(\d+)(_dora|_rslora)?(?![A-Za-z0-9])")


# ---------------------------------------------------------------- results.json: is it ours?


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def results_problem(obj) -> str | None:
    """Why obj is not a results.json written by `python -m eval` (the parts this layout reads), or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("schema") != 1:
        return f"schema {obj.get('schema')!r} is not 1"
    for key, typ in (("tasks", dict), ("rows", list), ("settings", dict)):
        if not isinstance(obj.get(key), typ):
            return f"key {key!r} missing or not a{'n object' if typ is dict else ' list'}"
    for name, info in obj["tasks"].items():
        if not isinstance(info, dict) or not isinstance(info.get("kind"), str) or not isinstance(info.get("headline"), str):
            return f"tasks.{name}: needs 'kind' and 'headline' strings"
    command = obj.get("command", [])
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        return "'command' is not a list of strings"
    scoring = obj["settings"].get("scoring", "standard")
    if not isinstance(scoring, str):
        return "settings.scoring is not a string"
    for i, row in enumerate(obj["rows"]):
        problem = _row_problem(row, obj["tasks"])
        if problem:
            return f"rows[{i}]: {problem}"
    return None


def _row_problem(row, tasks: dict) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    if not isinstance(row.get("name"), str) or row.get("kind") not in ("base", "adapter"):
        return "needs a 'name' string and 'kind' base or adapter"
    if not isinstance(row.get("results"), dict):
        return "'results' missing or not an object"
    if row.get("error") is not None and not isinstance(row["error"], str):
        return "'error' is not a string"
    if row.get("base_model") is not None and not isinstance(row["base_model"], str):
        return "'base_model' is not a string"
    shots = row.get("shots", 0)
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        return "'shots' is not a non-negative integer"
    if row.get("adapter") is not None and not isinstance(row["adapter"], dict):
        return "'adapter' is not an object"
    for task, res in row["results"].items():
        if task not in tasks:
            return f"results.{task}: task not in 'tasks'"
        problem = _result_problem(res)
        if problem:
            return f"results.{task}: {problem}"
    return None


def _result_problem(res) -> str | None:
    if not isinstance(res, dict):
        return "not an object"
    if "error" in res:
        return None if isinstance(res["error"], str) else "'error' is not a string"
    metrics = res.get("metrics")
    if not isinstance(metrics, dict):
        return "neither 'metrics' nor 'error'"
    ci = metrics.get("ci", {})
    if not isinstance(ci, dict):
        return "metrics.ci is not an object"
    for name, interval in ci.items():
        if not (isinstance(interval, list) and len(interval) == 2 and all(_is_num(x) for x in interval)):
            return f"metrics.ci.{name} is not [low, high]"
    for name, value in metrics.items():
        if name != "ci" and value is not None and not _is_num(value):
            return f"metrics.{name} is not a number"
    return None


# ---------------------------------------------------------------- method of a row


@dataclass(frozen=True)
class Method:
    column: str  # column key: "base", one of METHODS, another variant (fp16_r4), or "other: <row>"
    how: str  # why: "base row", "run.json entry", "name", "path", "no variant found"


def variant_from_entry(entry) -> str | None:
    """The variant the training entry names (lora/recipe/registry.py variant_name, Entry.variant's rule), or None when the
    entry does not say (no run.json, or keys of the wrong type)."""
    if not isinstance(entry, dict):
        return None
    bits, r = entry.get("quant_bits", 16), entry.get("lora_r")  # FinLoRA: absent quant_bits means 16-bit
    dora, rslora = entry.get("peft_use_dora", False), entry.get("peft_use_rslora", False)
    if bits not in (4, 8, 16) or isinstance(bits, bool) or not isinstance(r, int) or isinstance(r, bool) or r < 1:
        return None
    if not isinstance(dora, bool) or not isinstance(rslora, bool):
        return None
    return variant_name(bits, r, dora, rslora)


def variant_from_name(text: str) -> str | None:
    """The last FinLoRA-style variant in a name or path (the deepest folder is the most specific)."""
    found = list(VARIANT_RE.finditer(text or ""))
    return found[-1].group(0) if found else None


def method_of(row: dict) -> Method:
    if row["kind"] == "base":
        return Method("base", "base row")
    adapter = row.get("adapter") or {}
    run = adapter.get("run") if isinstance(adapter.get("run"), dict) else {}
    variant = variant_from_entry(run.get("entry"))
    if variant:
        return Method(variant, "run.json entry")
    for how, text in (("name", row["name"]), ("path", adapter.get("path"))):
        variant = variant_from_name(text if isinstance(text, str) else "")
        if variant:
            return Method(variant, how)
    return Method(f"other: {row['name']}", "no variant found")


# ---------------------------------------------------------------- the table


@dataclass
class Column:
    key: str  # "base@3" for the 3-shot base, else the method
    header: str
    published_method: str | None  # which published column sits beside it (None: FinLoRA has none)


@dataclass
class Ours:
    """One of our rows in one cell (several when several rows map to the same task and column)."""
    row: str
    value: float | None = None  # on the printed scale
    low: float | None = None
    high: float | None = None
    n: int | None = None
    error: str | None = None


@dataclass
class Line:
    task: str
    metric: str
    published_task: str | None  # FinLoRA's name for the task
    cells: dict[str, list[Ours]]  # column key -> our entries (empty: only the published number)
    published: dict[str, float]  # column key -> FinLoRA's number on the printed scale

    @property
    def label(self) -> str:
        return metric_style(self.metric)[0]

    @property
    def decimals(self) -> int:
        return metric_style(self.metric)[2]


@dataclass
class Table:
    columns: list[Column]
    lines: list[Line]
    header: list[str]  # what the numbers are: base model, scoring, limit
    placements: list[str]  # where each of our rows went and why
    notes: list[str] = field(default_factory=list)


def _finite(x) -> bool:
    return _is_num(x) and math.isfinite(x)


def difference(ours: Ours, published: float | None) -> float | None:
    """Ours − published, on the printed scale (accuracy in points), or None when either is missing."""
    if ours.value is None or published is None or not math.isfinite(ours.value):
        return None
    return ours.value - published


def _ours(row_name: str, res: dict, metric: str) -> Ours:
    if "error" in res:
        return Ours(row_name, error=res["error"])
    m = res["metrics"]
    factor = metric_style(metric)[1]
    value = m.get(metric)
    ci = m.get("ci", {}).get(metric)
    return Ours(
        row_name, value=value * factor if _finite(value) else None,
        low=ci[0] * factor if ci else None, high=ci[1] * factor if ci else None,
        n=m.get("n") if _is_num(m.get("n")) else None,
    )


def _metrics_for(task: str, info: dict, results: list[dict]) -> list[str]:
    """FinLoRA's published metrics that our rows have for this task, then our headline when it is none of
    them (ROUGE-L for text tasks: shown, never beside a BERTScore)."""
    present = {k for res in results if "metrics" in res for k, v in res["metrics"].items() if _finite(v)}
    shown = [m for m in COMPARED if m in present]
    if info["headline"] not in shown:
        shown.append(info["headline"])
    return shown


def _base_label(results: dict) -> tuple[list[str], bool]:
    bases = sorted({r.get("base_model") or "?" for r in results["rows"] if not r.get("error")} or
                   {r.get("base_model") or "?" for r in results["rows"]})
    like = all(PUBLISHED_BASE_MODEL.lower() in b.lower() for b in bases) and bases != []
    return bases, like


def _published_method(column: str) -> str | None:
    return column if column in PUBLISHED_MODELS.values() else None


def build_table(results: dict, published: dict[tuple[str, str], dict[str, float]]) -> Table:
    """results: a results.json dict that passed results_problem; published: parse_published's output."""
    tasks = results["tasks"]
    placed: list[tuple[dict, str]] = []  # (row, column key)
    columns: dict[str, Column] = {}
    placements, notes = [], []
    for row in results["rows"]:
        if row.get("error"):
            notes.append(f"Not in the table: {row['name']} ({row['kind']} row): {row['error']}")
            continue
        method = method_of(row)
        shots = row.get("shots", 0)
        if method.column == "base":
            key, header = f"base@{shots}", f"base ({shots}-shot)"
        else:
            key, header = method.column, method.column
        columns.setdefault(key, Column(key, header, _published_method(method.column)))
        placed.append((row, key))
        shot_note = f", {shots}-shot" if shots and method.column != "base" else ""
        placements.append(f"{row['name']} → {header} ({method.how}{shot_note}; base model {row.get('base_model')})")
    # FinLoRA's columns are always there (its numbers show even where we have no such adapter).
    columns.setdefault("base@0", Column("base@0", "base (0-shot)", "base"))
    for m in METHODS:
        columns.setdefault(m, Column(m, m, _published_method(m)))
    order = sorted((c for c in columns.values() if c.key.startswith("base@")), key=lambda c: int(c.key[5:]))
    order += [columns[m] for m in METHODS]
    order += [c for c in columns.values() if c not in order]

    reverse_tasks = {v: k for k, v in PUBLISHED_TASKS.items()}
    # FinLoRA's printed F1 keeps wrong answers as raw-text classes; under --scoring finlora our results carry
    # that number as f1_finlora, and it is the one to put beside FinLoRA's (f1_weighted is sklearn's).
    finlora_f1 = results["settings"].get("scoring") == "finlora"
    if finlora_f1:
        notes.append("weighted F1 under --scoring finlora is our f1_finlora: FinLoRA's rule, wrong answers counted "
                     "as their raw text (docs/eval.md, FinLoRA scoring); f1_weighted in results.json is sklearn's.")
    lines: list[Line] = []
    for task, info in tasks.items():
        here = [(row, key) for row, key in placed if task in row["results"]]
        if not here and not any(t == task for t, _ in published):
            continue  # nothing of ours and nothing published: an empty line says nothing
        for metric in _metrics_for(task, info, [row["results"][task] for row, _ in here]):
            cells: dict[str, list[Ours]] = {c.key: [] for c in order}
            ours_metric = "f1_finlora" if finlora_f1 and metric == "f1_weighted" else metric
            for row, key in here:
                cells[key].append(_ours(row["name"], row["results"][task], ours_metric))
            pub = {c.key: published[(task, c.published_method)][metric] for c in order
                   if c.published_method and metric in published.get((task, c.published_method), {})}
            lines.append(Line(task, metric, reverse_tasks.get(task), cells, pub))
        if task in PUBLISHED_BERTSCORE_TASKS:
            notes.append(_bertscore_note(task, results, lines))
    if any(c.key != "base@0" for c in order if c.key.startswith("base@")):
        notes.append("FinLoRA's README does not say its base numbers used examples, and its default harness "
                     "(test/test_dataset.py) puts none in the prompt: beside a k-shot base column, Δ also holds the "
                     "examples' effect.")
    return Table(order, lines, _header(results), placements, notes)


def _bertscore_note(task: str, results: dict, lines: list[Line]) -> str:
    if any(x.task == task and x.metric == "bertscore_f1" for x in lines):
        encoder = results["settings"].get("bertscore_model")
        return (f"{task}: FinLoRA's number is BERTScore F1 with {PUBLISHED_BERTSCORE_ENCODER} (bert-score package); "
                f"ours is BERTScore F1 with {encoder} (eval/bertscore.py: last layer, no idf, no rescaling) — "
                "the same kind of score, not the same implementation: read its Δ as approximate. ROUGE-L has no "
                "published counterpart.")
    return (f"{task}: FinLoRA publishes only BERTScore F1 ({PUBLISHED_BERTSCORE_ENCODER}) here; these results have "
            "no bertscore_f1 (evaluate with --bertscore-model LOCAL_ENCODER), so our ROUGE-L is shown without a "
            "published number: ROUGE-L and BERTScore are different scales and are never compared.")


def _header(results: dict) -> list[str]:
    bases, like = _base_label(results)
    s = results["settings"]
    scoring = s.get("scoring", "standard")
    out = [f"Our rows' base model: {', '.join(bases)}. FinLoRA's published numbers are for {PUBLISHED_BASE_MODEL} "
           "and adapters on it" + ("." if like else
                                   " — **not a like-for-like comparison**: read the published columns as a reference only.")]
    out.append(f"Scoring of our numbers: **{scoring}**" + (
        " (eval/metrics.py; FinLoRA's printed F1 uses its own rule — `--scoring finlora` reproduces it)."
        if scoring == "standard" else " (FinLoRA's rule)."))
    limit = s.get("limit")
    out.append(f"Test rows: the first {limit} of each test set (`--limit {limit}`); FinLoRA's numbers use the full "
               "test sets." if limit else "Test rows: every row of each test set.")
    out.append("Cell: ours [95% bootstrap interval] · pub = FinLoRA's published number · Δ = ours − published, on "
               "one scale: accuracy in % (ours × 100) and Δ in points; F1 and BERTScore 0–1. – = none.")
    return out
