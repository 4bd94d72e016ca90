"""PNG figures for `python -m eval report` (matplotlib, Agg backend: no display, no torch).

    python -m eval report eval_results/all --layout finlora     # writes eval_results/all/finlora_tasks.png

Input is plain data (eval/finlora_layout.py: Panel/Point); output is the PNG's bytes, so the caller writes
it atomically like every other output file.
"""
from __future__ import annotations

import io
import math

BASE_COLOR, ADAPTER_COLOR, PUBLISHED_COLOR = "#777777", "#1f77b4", "#d62728"


def tasks_png(panels, title: str, footer: str = "") -> bytes:
    """One panel per task: our rows as dots with their 95% interval, FinLoRA's published number as a hollow
    diamond at the same x, the base's points in grey. Returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless machines and tests
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n = max(len(panels), 1)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    width = max((len(p.points) for p in panels), default=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.5, 0.6 * width + 1.5) * ncols, 3.4 * nrows + 1.0),
                             dpi=100, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.5, 0.5, "no tasks in results.json", ha="center", va="center")
    fig.suptitle(plain(title), fontsize=10)
    fig.legend(handles=[
        Line2D([], [], marker="o", color=BASE_COLOR, linestyle="", label="ours: base (95% interval)"),
        Line2D([], [], marker="o", color=ADAPTER_COLOR, linestyle="", label="ours: adapter (95% interval)"),
        Line2D([], [], marker="D", markerfacecolor="none", markeredgecolor=PUBLISHED_COLOR, linestyle="",
               label="FinLoRA published"),
    ], loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=3, fontsize=8, frameon=False)
    if footer:
        fig.text(0.01, 0.005, plain(footer), fontsize=6, color="#555555", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if footer else 0, 1, 0.92))
    buf = io.BytesIO()
    # The command that made the figure also goes into the PNG's text chunk, readable without the picture.
    fig.savefig(buf, format="png", metadata={"Description": footer or title, "Software": "python -m eval report"})
    plt.close(fig)
    return buf.getvalue()


def plain(text: str) -> str:
    """Text shown as written: a `$` in a row name or path would otherwise start matplotlib's math mode (and
    an unpaired one fails the whole figure)."""
    return str(text).replace("$", r"\$")


def _draw(ax, panel) -> None:
    xs = range(len(panel.points))
    for x, p in zip(xs, panel.points, strict=True):
        color = BASE_COLOR if p.is_base else ADAPTER_COLOR
        if p.value is not None and math.isfinite(p.value):
            if p.low is not None and p.high is not None:
                ax.errorbar([x], [p.value], yerr=[[max(p.value - p.low, 0.0)], [max(p.high - p.value, 0.0)]],
                            fmt="o", color=color, capsize=4, markersize=6)
            else:
                ax.plot([x], [p.value], "o", color=color, markersize=6)
        if p.published is not None:
            ax.plot([x], [p.published], "D", markerfacecolor="none", markeredgecolor=PUBLISHED_COLOR, markersize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([plain(p.label) for p in panel.points], rotation=30, ha="right", fontsize=7)
    ax.set_title(plain(panel.title), fontsize=9)
    ax.set_ylabel(plain(panel.ylabel), fontsize=8)
    ax.set_xlim(-0.6, max(len(panel.points) - 0.4, 0.6))
    ax.set_ylim(-0.03 * panel.top, 1.03 * panel.top)
    ax.grid(axis="y", alpha=0.3)
