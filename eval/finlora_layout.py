"""Our results in FinLoRA's layout: task rows × method columns, FinLoRA's published number beside ours.

    python -m eval --base-model models/base_model/smollm2-135m-instruct --tasks fpb,formula --limit 20 --out /tmp/o
    python -m eval report /tmp/o --layout finlora     # writes /tmp/o/finlora_table.md, .csv, finlora_tasks.png

Pure part (tested with hand-made dicts): results.json dict + published rows -> Table -> markdown / csv /
plot panels. Edge part (bottom of the file): read results.json and the published CSV, write the files.
The rules (which metric a cell shows, how a row maps to a method, duplicates) are in docs/eval.md,
"Results in FinLoRA's layout".
"""
from __future__ import annotations

import csv
import io
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from eval.plots import tasks_png
from eval.report import md_escape
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, read_json, require_file, stat_kind, write_atomic
from lora.recipe.registry import variant_name

# ---------------------------------------------------------------- FinLoRA's published table, as data

PUBLISHED_CSV = REPO_ROOT / "data" / "finlora" / "published_results.csv"
PUBLISHED_SOURCE = "FinLoRA README.md, commit 7e1cf82 (data/finlora/published_results.csv)"
PUBLISHED_BASE_MODEL = "Llama-3.1-8B-Instruct"  # every published Llama row is this base or an adapter on it

# FinLoRA's table task name -> our task name. "Overall Average" is left out: it averages all 19 tasks.
PUBLISHED_TASKS = {
    "FPB": "fpb", "FiQA SA": "fiqa", "TFNS": "tfns", "NWGI": "nwgi", "Headline": "headline", "NER": "ner",
    "FiNER": "xbrl_finer", "FNXL": "xbrl_fnxl", "Tag Extraction": "xbrl_tags_extract",
    "Value Extraction": "xbrl_value_extract", "Formula Construction": "xbrl_formula_extract",
    "Formula Calculation": "xbrl_formula_calc_extract", "XBRL Term": "xbrl_term", "FinanceBench": "financebench",
    "Financial Math": "formula", "CFA Level 1": "cfa_level1", "CFA Level 2": "cfa_level2",
    "CFA Level 3": "cfa_level3", "CPA REG": "cpa_reg",
}
# Tasks whose published second number is BERTScore F1 (ProsusAI/finbert, the bert-score package) and whose
# accuracy is blank; for every other task it is sklearn's weighted F1 (under FinLoRA's scoring rule).
PUBLISHED_BERTSCORE_TASKS = frozenset({"xbrl_term", "financebench"})
PUBLISHED_BERTSCORE_ENCODER = "ProsusAI/finbert"
# FinLoRA's model name -> our method. Its other models (70B, GPT-4o, DeepSeek V3, Gemini) have no
# counterpart among our rows and are not shown. FinLoRA publishes no fp16_r8 numbers.
PUBLISHED_MODELS = {
    "llama_3_1_8b_instruct_base": "base",
    "llama_3_1_8b_instruct_lora_8bits_r8": "8bits_r8",
    "llama_3_1_8b_instruct_qlora_4bits_r4": "4bits_r4",
    "llama_3_1_8b_instruct_dora_8bits_r8": "8bits_r8_dora",
    "llama_3_1_8b_instruct_rslora_8bits_r8": "8bits_r8_rslora",
}
METHODS = ("8bits_r8", "4bits_r4", "8bits_r8_dora", "8bits_r8_rslora", "fp16_r8")  # FinLoRA's adapter columns
PUBLISHED_HEADER = ["task", "model", "accuracy_pct", "f1_or_score"]

# FinLoRA's adapter-folder naming (lora/recipe/registry.py Entry.variant writes the same), found in a row name or path.
VARIANT_RE = re.compile(r"(?<![A-Za-z0-9])(4bits|8bits|fp16)_r(\d+)(_dora|_rslora)?(?![A-Za-z0-9])")

# Our metric -> (label, factor to the printed scale, decimals). Accuracy is printed in % as FinLoRA prints
# it (ours are 0-1 in results.json); F1-like scores stay 0-1, as FinLoRA prints them.
METRIC_STYLE = {
    "accuracy": ("accuracy %", 100.0, 2),
    "f1_weighted": ("weighted F1", 1.0, 3),
    "bertscore_f1": ("BERTScore F1", 1.0, 3),
    "rougeL": ("ROUGE-L", 1.0, 3),
}
COMPARED = ("accuracy", "f1_weighted", "bertscore_f1")  # the metrics FinLoRA publishes, in its column order


def metric_style(metric: str) -> tuple[str, float, int]:
    return METRIC_STYLE.get(metric, (metric, 1.0, 3))


# ---------------------------------------------------------------- published rows


def parse_published(text: str, source: str) -> dict[tuple[str, str], dict[str, float]]:
    """(our task, method) -> {metric: value on FinLoRA's printed scale}; rows for models or tasks we do not
    map are skipped. A malformed file is one UserError naming the line."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != PUBLISHED_HEADER:
        raise UserError(f"{source}: header must be {','.join(PUBLISHED_HEADER)}, got {header!r}")
    out: dict[tuple[str, str], dict[str, float]] = {}
    for lineno, fields in enumerate(reader, start=2):
        if len(fields) != 4:
            raise UserError(f"{source}:{lineno}: expected 4 fields, got {len(fields)}")
        name, model, acc, score = fields
        task, method = PUBLISHED_TASKS.get(name), PUBLISHED_MODELS.get(model)
        if task is None or method is None:
            continue
        second = "bertscore_f1" if task in PUBLISHED_BERTSCORE_TASKS else "f1_weighted"
        values = {}
        for metric, raw in (("accuracy", acc), (second, score)):
            if raw.strip():
                try:
                    values[metric] = float(raw)
                except ValueError:
                    raise UserError(f"{source}:{lineno}: {raw!r} is not a number") from None
        out[(task, method)] = values
    return out


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


# ---------------------------------------------------------------- rendering (text)


def _fmt(x: float | None, decimals: int) -> str:
    if x is None:
        return "–"
    return f"{x:.{decimals}f}" if math.isfinite(x) else "nan"


def _ours_text(e: Ours, decimals: int) -> str:
    if e.error:
        return "error"
    text = _fmt(e.value, decimals)
    if e.low is not None and e.high is not None:
        text += f" [{_fmt(e.low, decimals)}, {_fmt(e.high, decimals)}]"
    return text


def cell_texts(line: Line, column: Column) -> list[str]:
    """The markdown text of one cell, one string per entry (more than one: several rows in that cell)."""
    entries = line.cells.get(column.key, [])
    pub = line.published.get(column.key)
    pub_text = f" · pub {_fmt(pub, line.decimals)}" if pub is not None else ""
    if not entries:
        return [f"–{pub_text}"] if pub is not None else ["–"]
    out = []
    for e in entries:
        d = difference(e, pub)
        text = _ours_text(e, line.decimals) + pub_text + (f" · Δ {d:+.{line.decimals}f}" if d is not None else "")
        out.append(f"{e.row}: {text}" if len(entries) > 1 else text)
    return out


def to_markdown(table: Table, provenance: list[str]) -> str:
    lines = ["# Results in FinLoRA's layout", "", *provenance, ""]
    lines += [f"- {h}" for h in table.header] + [""]
    lines.append("| task | metric | n | " + " | ".join(md_escape(c.header) for c in table.columns) + " |")
    lines.append("|---|---|---|" + "---|" * len(table.columns))
    for line in table.lines:
        texts = [cell_texts(line, c) for c in table.columns]
        ns = sorted({e.n for es in line.cells.values() for e in es if e.n is not None})
        depth = max(len(t) for t in texts)
        for i in range(depth):  # several rows in one cell: extra lines, each cell naming its row
            first = i == 0
            task = line.task + (f" ({line.published_task})" if line.published_task and line.published_task.lower()
                                != line.task else "")
            head = [task if first else "↳", line.label if first else "", "/".join(map(str, ns)) if first else ""]
            cells = [t[i] if i < len(t) else "" for t in texts]
            lines.append("| " + " | ".join(md_escape(x) for x in head + cells) + " |")
    if table.placements:
        lines += ["", "Where each of our rows went:", *[f"- {md_escape(p)}" for p in table.placements]]
    if table.notes:
        lines += ["", "Notes:", *[f"- {md_escape(n)}" for n in table.notes]]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["task", "finlora_task", "metric", "scale", "column", "published_model", "row", "n", "ours", "ci_low",
               "ci_high", "published", "difference", "published_in_ci", "error"]


def to_csv(table: Table, provenance: list[str]) -> str:
    """One line per task × metric × column × our row (a column with none of our rows: one line with the
    published number alone). Provenance first, as `#` lines (read with pandas' skiprows=N or by skipping them)."""
    buf = io.StringIO()
    for p in provenance:
        buf.write("# " + p.replace("\n", " ") + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    rev_models = {v: k for k, v in PUBLISHED_MODELS.items()}
    for line in table.lines:
        scale = "percent" if metric_style(line.metric)[1] == 100.0 else "0-1"
        for c in table.columns:
            pub = line.published.get(c.key)
            pub_model = rev_models.get(c.published_method, "") if pub is not None else ""
            entries = line.cells.get(c.key) or [None]
            for e in entries:
                if e is None and pub is None:
                    continue
                d = difference(e, pub) if e is not None else None
                inside = ("" if e is None or pub is None or e.low is None or e.high is None
                          else str(e.low <= pub <= e.high).lower())
                w.writerow([line.task, line.published_task or "", line.metric, scale, c.header, pub_model,
                            e.row if e else "", e.n if e and e.n is not None else "",
                            _num(e.value if e else None), _num(e.low if e else None), _num(e.high if e else None),
                            _num(pub), _num(d), inside, e.error if e and e.error else ""])
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}" if math.isfinite(x) else "nan"


# ---------------------------------------------------------------- plot data (pure; eval/plots.py draws it)


@dataclass
class Point:
    label: str  # x tick: column, and the row when the column holds several
    value: float | None
    low: float | None
    high: float | None
    published: float | None
    is_base: bool


@dataclass
class Panel:
    title: str
    ylabel: str
    points: list[Point]
    top: float  # the scale's top (100 for %, 1 for 0-1 scores): panels compare at a glance


def plot_panels(table: Table) -> list[Panel]:
    """One panel per task: its first metric line (accuracy %, else BERTScore F1, else the headline)."""
    panels, seen = [], set()
    for line in table.lines:
        if line.task in seen:
            continue
        seen.add(line.task)
        points = []
        for c in table.columns:
            entries, pub = line.cells.get(c.key, []), line.published.get(c.key)
            base = c.key.startswith("base@")
            if not entries and pub is not None:
                points.append(Point(c.header, None, None, None, pub, base))
            for e in entries:
                label = c.header + (f"\n{e.row}" if len(entries) > 1 else "")
                points.append(Point(label.removeprefix("other: "), e.value, e.low, e.high, pub, base))
        title = line.task + (f" ({line.published_task})" if line.published_task else "")
        panels.append(Panel(title, line.label, points, 100.0 if metric_style(line.metric)[1] == 100.0 else 1.0))
    return panels


# ---------------------------------------------------------------- edge: read, write


RESULTS_JSON = "results.json"
TABLE_MD, TABLE_CSV, TASKS_PNG = "finlora_table.md", "finlora_table.csv", "finlora_tasks.png"
OUTPUTS = (TABLE_MD, TABLE_CSV, TASKS_PNG)


def read_results(out: Path) -> dict:
    """OUT/results.json, checked to be ours; every problem is one UserError naming the file."""
    path = out / RESULTS_JSON
    kind = stat_kind(path, RESULTS_JSON)
    if kind == "missing":
        raise UserError(f"{path} not found (write it first: python -m eval ... --out {out})")
    if kind != "file":
        raise UserError(f"{path} is not a file")
    obj = read_json(path, RESULTS_JSON)
    problem = results_problem(obj)
    if problem:
        raise UserError(f"{path}: not a results.json written by python -m eval ({problem})")
    return obj


def read_published(path: Path = PUBLISHED_CSV) -> dict[tuple[str, str], dict[str, float]]:
    require_file(path, "published results")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    return parse_published(text, str(path))


def write_report(out: Path, results: dict, argv: list[str]) -> str:
    """Write finlora_table.md / .csv / finlora_tasks.png into out (each atomically); returns the markdown."""
    table = build_table(results, read_published())
    command = shlex.join(argv)
    made_by = shlex.join(results.get("command") or []) or "?"
    provenance = [f"Generated by `{command}` from {out / RESULTS_JSON} (written {results.get('created', '?')} by "
                  f"`{made_by}`).", f"Published numbers: {PUBLISHED_SOURCE}."]
    markdown = to_markdown(table, provenance)
    write_atomic(out / TABLE_MD, markdown)
    write_atomic(out / TABLE_CSV, to_csv(table, provenance))
    bases, like = _base_label(results)
    title = f"Ours vs FinLoRA's published numbers — our base: {', '.join(bases)}" + (
        "" if like else f" (published: {PUBLISHED_BASE_MODEL}; not like-for-like)")
    write_atomic(out / TASKS_PNG, tasks_png(plot_panels(table), title, footer=" ".join(provenance)))
    return markdown
