"""queue.json: what a queue has done so far, beside its adapters (lora_adapters/queues/<queue>/queue.json).

    python finetune.py --queue a b c        # writes it before the first run and after every change
    cat lora_adapters/queues/<queue>/queue.json

Written atomically after every transition, so a lost pod leaves the last consistent state: a run
shown "running" there was cut off, and the same command resumes it from its newest checkpoint. The
run folders stay the truth for training (run.json); this file adds what only the queue knows (wall
time over attempts, the evaluation, the errors). Transitions are pure functions (state in, state out).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lora.core.errors import UserError
from lora.core.files import read_json, utc_now_iso, write_json_atomic

QUEUE_JSON = "queue.json"
SCHEMA = 1
RunStatus = Literal["pending", "running", "complete", "failed", "interrupted", "locked"]
EvalStatus = Literal["pending", "complete", "failed", "skipped"]
FINAL = ("complete",)  # a run the same command will not train again


class Metric(BaseModel):
    """One task's headline metric of one adapter, as eval's results.json reports it."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    value: float | None = None
    low: float | None = None  # 95% bootstrap interval (eval/metrics.py)
    high: float | None = None
    n: int | None = None
    error: str | None = None


class EvalState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: EvalStatus = "pending"
    exit_code: int | None = None
    out: str | None = None  # the eval --out folder (repo-relative)
    metrics: dict[str, Metric] = Field(default_factory=dict)
    error: str | None = None


class RunState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: RunStatus = "pending"
    swept: dict = Field(default_factory=dict)  # sweep key -> this run's value
    profile: str | None = None
    attempts: int = 0
    started_at: str | None = None  # of the current (or last) attempt
    ended_at: str | None = None
    wall_seconds: float = 0.0  # summed over attempts that ended (a lost pod's attempt is not counted)
    workers: int | None = None  # GPUs (or CPU processes) x machines of the last attempt
    accelerator: str | None = None
    usd_per_gpu_hour: float | None = None
    planned_steps: int | None = None
    planned_hours: float | None = None
    planned_cost_usd: float | None = None
    steps: int | None = None  # global_step from run.json
    exit_code: int | None = None
    error: str | None = None
    eval: EvalState = Field(default_factory=EvalState)


class OnFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str]
    exit_code: int | None = None
    error: str | None = None


class QueueState(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: int = Field(default=SCHEMA, alias="schema")
    name: str
    command: list[str]
    registry: str  # the registry file the runs come from (the sweep file for a sweep)
    eval_mode: Literal["after", "end", "none"] = "after"
    sweep_base: str | None = None
    sweep_keys: list[str] = Field(default_factory=list)
    created_at: str = Field(default_factory=utc_now_iso)
    updated_at: str = Field(default_factory=utc_now_iso)
    outcome: str | None = None  # None while running; "complete", "failed", "interrupted"
    on_finish: OnFinish | None = None
    runs: list[RunState]

    def run(self, name: str) -> RunState:
        return next(r for r in self.runs if r.name == name)

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------- read / write


def read_state(folder: Path) -> QueueState | None:
    path = folder / QUEUE_JSON
    if not path.is_file():
        return None
    obj = read_json(path, QUEUE_JSON)
    try:
        return QueueState.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UserError(f"{path}: key {loc!r}: {err['msg']}; move the file aside to start the queue afresh") from None


def write_state(folder: Path, state: QueueState) -> QueueState:
    state = state.model_copy(update={"updated_at": utc_now_iso()})
    write_json_atomic(folder / QUEUE_JSON, state.to_json())
    return state


# ---------------------------------------------------------------- transitions (pure)


def merge(previous: QueueState | None, fresh: QueueState) -> QueueState:
    """The state for this invocation: the plan's runs in the plan's order, each with what an earlier
    invocation of the same queue recorded. A run left "running" was cut off: it becomes "interrupted"."""
    if previous is None:
        return fresh
    old = {r.name: r for r in previous.runs}
    runs = []
    for r in fresh.runs:
        prior = old.get(r.name)
        if prior is None:
            runs.append(r)
            continue
        status = "interrupted" if prior.status == "running" else prior.status
        runs.append(prior.model_copy(update={"status": status, "swept": r.swept or prior.swept}))
    return fresh.model_copy(update={"runs": runs, "created_at": previous.created_at, "on_finish": None})


def update_run(state: QueueState, name: str, **changes) -> QueueState:
    runs = [r.model_copy(update=changes) if r.name == name else r for r in state.runs]
    return state.model_copy(update={"runs": runs})


def set_eval(state: QueueState, name: str, ev: EvalState) -> QueueState:
    return update_run(state, name, eval=ev)


def needs_training(run: RunState) -> bool:
    return run.status not in FINAL


def needs_eval(run: RunState, mode: str) -> bool:
    return mode != "none" and run.status == "complete" and run.eval.status in ("pending", "failed")


def is_finished(state: QueueState) -> bool:
    """Nothing left for the same command to do: every run trained and (unless --eval none) evaluated."""
    return all(r.status == "complete" and not needs_eval(r, state.eval_mode) for r in state.runs)


def outcome(state: QueueState, interrupted: bool) -> str:
    if interrupted:
        return "interrupted"
    bad = any(r.status != "complete" or r.eval.status == "failed" for r in state.runs)
    return "failed" if bad else "complete"
