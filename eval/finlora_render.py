"""FinLoRA's layout rendered: the Table as markdown, as CSV, and as the plot panels eval/plots.py draws.

    python -m eval report /tmp/o --layout finlora     # writes /tmp/o/finlora_table.md, .csv, finlora_tasks.png

Pure: a Table (eval/finlora_table.py) in, text or plain data out; eval/finlora_layout.py writes the files.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from eval.finlora_published import PUBLISHED_MODELS, metric_style
from eval.finlora_table import Column, Line, Ours, Table, difference
from eval.report import md_escape

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
