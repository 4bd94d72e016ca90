"""lora/pod/queue_summary.py: the table's numbers (GPU-hours, cost, intervals) and its three formats + PNG.

    .venv/bin/python -m pytest tests/pod/test_queue_summary.py -q
"""
from __future__ import annotations

import csv
import io
import json

from lora.pod.queue_eval import eval_state, metrics_by_run
from lora.pod.queue_state import EvalState, Metric, OnFinish, QueueState, RunState
from lora.pod.queue_summary import build_summary, cost_usd, gpu_hours, sweep_png, to_csv, to_markdown, write_summary


def gpu_run(name="a", **kw) -> RunState:
    base = dict(name=name, status="complete", accelerator="cuda", workers=4, usd_per_gpu_hour=0.26,
                wall_seconds=1800.0, steps=100,
                eval=EvalState(status="complete", metrics={"fpb": Metric(metric="accuracy", value=0.81, low=0.75,
                                                                          high=0.86, n=200)}))
    base.update(kw)
    return RunState(**base)


def queue(*runs, keys=()) -> QueueState:
    return QueueState(name="q", command=["python", "finetune.py", "x", "--sweep", "lora_r=4,8"], registry="r.json",
                      sweep_base="x" if keys else None, sweep_keys=list(keys), outcome="complete", runs=list(runs))


def test_gpu_hours_are_wall_time_times_gpus_and_cost_is_at_the_price():
    run = gpu_run()
    assert gpu_hours(run) == 2.0 and cost_usd(run) == 0.52
    cpu = gpu_run(accelerator="cpu", workers=1)
    assert gpu_hours(cpu) is None and cost_usd(cpu) is None
    assert cost_usd(gpu_run(usd_per_gpu_hour=None)) is None


def test_markdown_csv_json_carry_the_same_numbers():
    failed = RunState(name="b", status="failed", error="training exited 1", wall_seconds=60, accelerator="cuda",
                      workers=4, usd_per_gpu_hour=0.26)
    s = queue(gpu_run(), failed)
    s = s.model_copy(update={"on_finish": OnFinish(argv=["sudo", "poweroff"], exit_code=0)})
    summary = build_summary(s)
    assert summary["totals"]["gpu_hours"] == round(2.0 + 4 / 60, 4) and summary["totals"]["failed"] == 1
    md = to_markdown(summary)
    assert "| a | complete | 100 | 0:30:00 | 2.000 | $0.52 | complete | 0.810 [0.750, 0.860] |" in md
    assert "| b | failed | – | 0:01:00 | 0.067 | $0.02 | pending | – |" in md
    assert "- **b**: training exited 1" in md and "--on-finish `sudo poweroff`: exit code 0" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(summary))))
    assert rows[0]["task"] == "fpb" and rows[0]["value"] == "0.81" and rows[0]["ci_low"] == "0.75"
    assert rows[1]["error"] == "training exited 1"
    assert json.loads(json.dumps(summary))["rows"][0]["metrics"]["fpb"]["high"] == 0.86


def test_sweep_adds_a_column_per_key_and_a_png(tmp_path):
    s = queue(gpu_run("x-lora_r4", swept={"lora_r": 4}), gpu_run("x-lora_r8", swept={"lora_r": 8}), keys=["lora_r"])
    md = to_markdown(build_summary(s))
    assert "| run | status | lora_r | steps |" in md and "| x-lora_r8 | complete | 8 | 100 |" in md
    assert sweep_png(build_summary(s))[:4] == b"\x89PNG"
    assert sweep_png(build_summary(queue(gpu_run()))) is None  # not a sweep: no figure
    write_summary(tmp_path, s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json", "summary.md", "summary.png"]


RESULTS = {
    "tasks": {"fpb": {"headline": "accuracy"}, "ner": {"headline": "accuracy"}},
    "rows": [
        {"name": "base", "kind": "base", "error": None, "adapter": None, "results": {}},
        {"name": "renamed", "kind": "adapter", "error": None, "adapter": {"path": "lora_adapters/a"},
         "results": {"fpb": {"metrics": {"n": 5, "accuracy": 0.6, "ci": {"accuracy": [0.2, 0.9]}}},
                     "ner": {"error": "generation failed"}}},
        {"name": "b", "kind": "adapter", "error": "weights missing", "adapter": {"path": "elsewhere/b"},
         "results": {}},
    ],
}


def test_metrics_are_read_from_results_json_by_adapter_path_then_name():
    found = metrics_by_run(RESULTS, {"a": "lora_adapters/a", "b": "lora_adapters/b", "c": "lora_adapters/c"})
    assert found["a"]["metrics"]["fpb"] == Metric(metric="accuracy", value=0.6, low=0.2, high=0.9, n=5)
    assert found["a"]["metrics"]["ner"].error == "generation failed"
    assert found["b"] == {"error": "weights missing"} and "c" not in found
    assert eval_state(1, "out", found["a"]).status == "failed"
    assert eval_state(1, "out", found["b"]).error == "weights missing"
    missing = eval_state(2, "out", None)
    assert missing.status == "failed" and "exited 2" in missing.error
