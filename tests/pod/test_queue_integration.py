"""Real queues on this CPU: finetune.py --queue / --sweep -> axolotl on the bundled model, a few steps per run.

    python -m pytest -m slow tests/pod/test_queue_integration.py

1. A queue of two tiny entries with a failing one between them: SIGTERM during the second run, then the same
   command again, SIGKILL (queue and trainer: a lost pod) during the resumed run, then the same command again:
   it completes with every run at its max_steps, the failing entry recorded, one table.
2. A two-value sweep of the same entry, uninterrupted, evaluated at the end in one `python -m eval` call: the
   same step count as the interrupted run, a metric with its interval per swept value, a PNG.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora.pod.queue_state import read_state
from lora.train.lock import processes_with_token
from lora.train.outputs import checkpoint_step, complete_checkpoints
from tests.conftest import REPO, cpu_entry

pytestmark = pytest.mark.slow
STEPS = {"a": 2, "b": 8}  # b checkpoints every 2 steps (a quarter of max_steps)


@pytest.fixture(scope="module", autouse=True)
def bundled_model():
    from lora.core.base_model import ensure_base_model

    ensure_base_model()


@pytest.fixture
def entries(workspace):
    workspace.write({"a": cpu_entry(max_steps=STEPS["a"]),
                     "broken": cpu_entry(dataset_path=str(workspace.root / "missing.jsonl")),
                     "b": cpu_entry(max_steps=STEPS["b"])})
    return workspace


def start(workspace, *args):
    argv = [sys.executable, str(REPO / "finetune.py"), *workspace.argv(*args)]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint_after(proc, out: Path, step: int, timeout: float = 500) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done = [checkpoint_step(c) for c in complete_checkpoints(out)] if out.is_dir() else []
        if done and done[-1] > step:
            return done[-1]
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, f"no checkpoint after step {step} within {timeout} s"
        time.sleep(0.2)


def queue_folder(workspace) -> Path:
    (folder,) = [p for p in (workspace.adapters / "queues").iterdir() if p.is_dir()]
    return folder


def test_queue_survives_sigterm_and_a_lost_machine_and_a_failing_entry(entries):
    queue = ("--queue", "a", "broken", "b", "--eval", "none")
    out_b = entries.adapters / "b"

    first = start(entries, *queue)
    reached = wait_for_checkpoint_after(first, out_b, 0)
    first.send_signal(signal.SIGTERM)  # once: forwarded to the trainer, the queue stops consistent
    log = first.communicate(timeout=300)[0]
    assert first.returncode == 128 + signal.SIGTERM, log[-4000:]
    state = read_state(queue_folder(entries))
    assert [r.status for r in state.runs] == ["complete", "failed", "interrupted"], log[-4000:]
    assert state.outcome == "interrupted" and "missing.jsonl" in state.run("broken").error

    resume = checkpoint_step(complete_checkpoints(out_b)[-1])
    assert reached <= resume < STEPS["b"]
    second = start(entries, *queue)  # the same command: a is skipped, b resumes
    wait_for_checkpoint_after(second, out_b, resume)
    token = json.loads((entries.adapters / ".b.lock").read_text())["token"]
    second.kill()  # once: SIGKILL, and the trainer with it, as when the pod is lost
    for pid in processes_with_token(token):
        os.kill(pid, signal.SIGKILL)
    log = second.communicate(timeout=60)[0]
    assert "1/3 a: start" not in log and "3/3 b: start" in log, log[-4000:]  # a finished: not retrained
    assert f"resuming from checkpoint-{resume}" in log
    assert read_state(queue_folder(entries)).run("b").status == "running"

    third = subprocess.run([sys.executable, str(REPO / "finetune.py"), *entries.argv(*queue)], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    log = third.stdout + third.stderr
    assert third.returncode == 1, log[-4000:]  # broken failed; the others finished
    assert "resuming from checkpoint-" in log
    state = read_state(queue_folder(entries))
    assert [r.status for r in state.runs] == ["complete", "failed", "complete"]
    assert state.run("a").steps == STEPS["a"] and state.run("b").steps == STEPS["b"]
    run_b = json.loads((out_b / "run.json").read_text())
    assert run_b["status"] == "complete" and run_b["global_step"] == STEPS["b"] and run_b["resumed_from"]
    assert state.run("b").attempts == 3
    table = (queue_folder(entries) / "summary.md").read_text()
    assert table.count("| b | complete | 8 |") == 1 and "| broken | failed |" in table
    again = subprocess.run([sys.executable, str(REPO / "finetune.py"), *entries.argv(*queue)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert "| a | complete | 2 |" in again.stdout and "start —" not in again.stdout


def test_two_value_sweep_uninterrupted_evaluated_at_the_end(entries):
    result = subprocess.run([sys.executable, str(REPO / "finetune.py"),
                             *entries.argv("b", "--sweep", "lora_r=2,4", "--eval", "end", "--eval-limit", "3")],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    folder = queue_folder(entries)
    state = read_state(folder)
    assert [r.name for r in state.runs] == ["b-lora_r2", "b-lora_r4"]
    assert [r.steps for r in state.runs] == [STEPS["b"]] * 2  # as the interrupted queue's b
    for r in state.runs:
        fpb = r.eval.metrics["fpb"]
        assert r.eval.status == "complete" and fpb.n == 3 and fpb.low <= fpb.value <= fpb.high
        cfg = json.loads((entries.adapters / r.name / "adapter_config.json").read_text())
        assert cfg["r"] == r.swept["lora_r"]
    results = json.loads((folder / "eval" / "results.json").read_text())  # each eval call rewrites it
    assert sorted(r["name"] for r in results["rows"] if r["kind"] == "adapter") == ["b-lora_r2", "b-lora_r4"]
    assert (folder / "summary.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sweep_keys"] == ["lora_r"] and summary["tasks"][:1] == ["fpb"]
