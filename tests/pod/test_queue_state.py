"""lora/pod/queue_state.py: queue.json's model, atomic round trip, and the pure transitions.

    .venv/bin/python -m pytest tests/pod/test_queue_state.py -q
"""
from __future__ import annotations

import json

import pytest

from lora.core.errors import UserError
from lora.pod.queue_state import (
    EvalState,
    QueueState,
    RunState,
    is_finished,
    merge,
    needs_eval,
    needs_training,
    outcome,
    read_state,
    update_run,
    write_state,
)


def state(*runs: RunState, mode="after") -> QueueState:
    return QueueState(name="q", command=["python", "finetune.py", "--queue", "a"], registry="r.json",
                      eval_mode=mode, runs=list(runs))


def test_round_trip_is_atomic_and_refuses_unknown_keys(tmp_path):
    s = state(RunState(name="a", status="complete", steps=4))
    write_state(tmp_path, s)
    assert [p.name for p in tmp_path.iterdir()] == ["queue.json"]  # no temp file left
    assert read_state(tmp_path).run("a").steps == 4
    raw = json.loads((tmp_path / "queue.json").read_text())
    raw["runs"][0]["stepz"] = 1
    (tmp_path / "queue.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="stepz"):
        read_state(tmp_path)
    assert read_state(tmp_path / "none") is None


def test_merge_keeps_what_was_done_follows_the_new_order_and_marks_cut_off_runs_interrupted():
    old = state(RunState(name="a", status="complete", steps=2, wall_seconds=5),
                RunState(name="b", status="running", attempts=1))
    new = merge(old, state(RunState(name="c"), RunState(name="b"), RunState(name="a")))
    assert [(r.name, r.status) for r in new.runs] == [("c", "pending"), ("b", "interrupted"), ("a", "complete")]
    assert new.run("a").wall_seconds == 5 and new.run("b").attempts == 1
    assert merge(None, old) is old


def test_what_is_left_to_do():
    done = RunState(name="a", status="complete", eval=EvalState(status="complete"))
    unevaluated = RunState(name="b", status="complete")
    failed_eval = RunState(name="c", status="complete", eval=EvalState(status="failed"))
    assert not needs_training(done) and needs_training(RunState(name="x", status="failed"))
    assert needs_eval(unevaluated, "after") and needs_eval(failed_eval, "end") and not needs_eval(unevaluated, "none")
    assert not needs_eval(RunState(name="x", status="failed"), "after")
    assert is_finished(state(done)) and not is_finished(state(done, unevaluated))
    assert is_finished(state(done, unevaluated, mode="none"))


def test_outcome():
    done = RunState(name="a", status="complete")
    assert outcome(state(done), interrupted=False) == "complete"
    assert outcome(state(done), interrupted=True) == "interrupted"
    assert outcome(state(done, RunState(name="b", status="failed")), interrupted=False) == "failed"
    bad_eval = RunState(name="c", status="complete", eval=EvalState(status="failed"))
    assert outcome(state(done, bad_eval), interrupted=False) == "failed"


def test_update_run_changes_one_run_only():
    s = state(RunState(name="a"), RunState(name="b"))
    t = update_run(s, "b", status="running", attempts=1)
    assert t.run("b").status == "running" and t.run("a").status == "pending" and s.run("b").status == "pending"
