"""results.json / .csv / .md rendering from hand-made pair results (fast, no model).

    .venv/bin/python -m pytest tests/eval/test_report.py -q
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from eval import report
from eval.discovery import BaseModel, Group
from eval.run_plan import Row, Settings
from eval.tasks import load_registry, load_task_data


def _pair(acc: float, base_row: str | None) -> dict:
    return {"prompt_format": "chatml", "base_row": base_row, "timing": {"samples_per_second": 2.5},
            "metrics": {"n": 10, "accuracy": acc, "f1_weighted": acc - 0.1, "f1_macro": acc - 0.2, "unparsed": 1,
                        "ci": {"accuracy": [acc - 0.05, acc + 0.05], "f1_weighted": [0.1, 0.9], "f1_macro": [0.1, 0.9]}}}


@pytest.fixture
def results(tmp_path):
    group = Group(BaseModel("models/base_model/smollm2-135m-instruct", "/abs/base"), [])
    datas = {"fpb": load_task_data(load_registry()["fpb"]), "formula": load_task_data(load_registry()["formula"])}
    rows = [
        Row("base", "base", group, results={"fpb": _pair(0.5, None), "formula": {"error": "evaluation failed: boom"}}),
        Row("ad|a", "adapter", group, results={"fpb": _pair(0.75, "base")}),
        Row("late", "adapter", group, error="training did not finish (run.json status: running)"),
    ]
    return report.build_results(rows, datas, [], Settings(out=Path(tmp_path), limit=10), {"torch": "x"}, 1.0)


def test_delta_and_rows(results):
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["ad|a"]["results"]["fpb"]["delta_vs_base"] == pytest.approx(0.25)
    assert "delta_vs_base" not in rows["base"]["results"]["fpb"]
    assert rows["late"]["error"].startswith("training did not finish")


def test_markdown(results):
    md = report.to_markdown(results)
    assert "| base | 0.500 [0.450, 0.550] | error |" in md
    assert "| ad\\|a | 0.750 [0.700, 0.800] Δ +0.250 | – |" in md  # pipes escaped, missing cell as –
    assert "| late | error | error |" in md
    assert "- **late**: training did not finish" in md
    assert "- **base** × formula: evaluation failed: boom" in md
    assert "fpb (accuracy, n=10)" in md


def test_csv(results):
    lines = list(csv.DictReader(io.StringIO(report.to_csv(results))))
    acc = [x for x in lines if x["row"] == "ad|a" and x["metric"] == "accuracy"][0]
    assert acc["value"] == "0.750000" and acc["ci_low"] == "0.700000" and acc["delta_vs_base"] == "0.250000"
    assert acc["headline"] == "1"
    f1 = [x for x in lines if x["row"] == "ad|a" and x["metric"] == "f1_macro"][0]
    assert f1["delta_vs_base"] == "" and f1["headline"] == "0"
    assert [x["error"] for x in lines if x["row"] == "late"] == ["training did not finish (run.json status: running)"]
    assert any(x["row"] == "base" and x["task"] == "formula" and "boom" in x["error"] for x in lines)


def test_report_does_not_import_the_runner():
    # report is pure (data in, text out); runner imports report, so the reverse would be a cycle.
    import subprocess
    import sys

    code = "import sys, eval.report; print('eval.runner' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_markdown_shows_compute_and_results_without_it_still_render(results):
    from lora.core.compute import ComputeRecord, PhaseCompute

    total = PhaseCompute(name="total", wall_seconds=12.0, peak_rss_bytes=1_500_000_000, cpu_percent=88.0)
    gen = PhaseCompute(name="generate a|b × fpb", wall_seconds=9.5, peak_rss_bytes=1_400_000_000, cpu_percent=97.0)
    rec = ComputeRecord(interval_seconds=0.5, cpu_count=2, total=total, phases=[gen])
    md = report.to_markdown({**results, "compute": rec.model_dump(mode="json")})
    assert "| generate a\\|b × fpb | 9.5 | 1.4 GB | 97% |" in md and "| total | 12.0 | 1.5 GB | 88% |" in md
    assert "GPU memory" not in md and "no GPU" in md
    gpu = rec.model_copy(update={"gpus": ["NVIDIA H100"], "total": total.model_copy(
        update={"peak_gpu_memory_bytes": 20_000_000_000, "gpu_util_percent": 71.0})})
    assert "| total | 12.0 | 1.5 GB | 88% | 20.0 GB | 71% |" in report.to_markdown({**results, "compute": gpu.model_dump()})
    assert "Compute" not in report.to_markdown(results)  # a results.json from before compute tracking
    assert "malformed" in report.to_markdown({**results, "compute": {"total": 1}})
