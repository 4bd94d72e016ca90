"""Queues: many registry entries trained one after another, each evaluated, ending in one table.

    python finetune.py --queue a b c                     # in order; each under its own lock and folder
    python finetune.py --match 'sentiment_*_cpu' --eval end --on-finish sudo shutdown -h now
    python finetune.py tiny --sweep lora_r=4,8 learning_rate=1e-4,5e-4 --dry-run   # plans, launches nothing
    python finetune.py --queue a b c                     # after a lost pod: skips finished runs, resumes the cut one

Everything of a queue lives in lora_adapters/queues/<queue>/: queue.json (lora/pod/queue_state.py), for a
sweep its registry file sweep.json (lora/recipe/sweep.py), eval/ (python -m eval --out), summary.{md,csv,json,png}
(lora/pod/queue_summary.py). The queue's name is derived from the command (or --queue-name), so the same
command finds the same state.

Decide, then do: `plan_queue` (lora/pod/queue_plan.py; pure: names, sweep, queue name, folder) builds the
QueuePlan; `run_queue` executes it. A run is trained in this process through lora/train/launch.py under its
RunLock (the child gets Ctrl-C/SIGTERM forwarded by lora/launch.run_child); a run another launch holds is
deferred and waited for at the end, and decided again under its lock, so it is never trained twice. Evaluation
is `python -m eval` as a child (argv list: lora/pod/queue_eval.py). A failed run is recorded and the queue
goes on (--stop-on-error stops); a signal stops the queue after the current child has ended, with the state
consistent.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, adapter_weights, repo_relative, utc_now_iso
from lora.core.process import run_child
from lora.core.run_record import RunRecord
from lora.pod.queue_eval import eval_argv, eval_state, metrics_by_run
from lora.pod.queue_plan import (
    QueueOptions,
    QueuePlan,
    format_dry_run,
    fresh_state,
    plan_queue,
    plan_rows,
    request_for,
)
from lora.pod.queue_state import (
    EvalState,
    Metric,
    OnFinish,
    QueueState,
    is_finished,
    merge,
    needs_eval,
    needs_training,
    outcome,
    read_state,
    set_eval,
    update_run,
    write_state,
)
from lora.pod.queue_summary import OUTPUTS, PNG, duration, write_summary
from lora.recipe.profiles import PROFILES
from lora.recipe.registry import Registry, load_registry
from lora.recipe.sweep import write_sweep_registry
from lora.train.launch import LaunchRequest, check_request, decide, entry_for, execute, gather_facts, workers_here
from lora.train.lock import RunLock
from lora.train.outputs import checkpoint_step

POLL_SECONDS = 30.0  # how often a deferred run's lock is tried again


# ---------------------------------------------------------------- the edge: signals


class StopFlag:
    """SIGINT/SIGTERM while no child runs: finish the current step, then stop (a second one: stop now).
    While a child runs, lora/launch.run_child forwards them to it instead."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopFlag":
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"queue: signal {signal.Signals(signum).name}: stopping after the current step "
              "(again: stop now)", file=sys.stderr, flush=True)

    def set(self, signum: int) -> None:
        self.signum = self.signum or signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- the edge: one training run


@dataclass
class Attempt:
    """What one attempt at a run ended with."""

    status: str  # complete, failed, interrupted, locked
    wall_seconds: float = 0.0
    steps: int | None = None
    exit_code: int | None = None
    error: str | None = None
    signum: int | None = None


def _eta(estimate, resume: Path | None) -> str:
    if estimate is None:
        return "no plan"
    text = f"plan {estimate.steps} steps"
    if estimate.hours is None:
        return text + ", time not estimated"
    left = estimate.hours
    if resume is not None and estimate.steps:
        done = checkpoint_step(resume)
        left = estimate.hours * max(0.0, 1 - done / estimate.steps)
    end = datetime.now(timezone.utc) + timedelta(hours=left)
    cost = "" if estimate.cost_usd is None else f", ${estimate.cost_usd:.2f}"
    return text + f", {estimate.hours:.2f} h{cost}, ETA {end:%H:%M} UTC"


class Runner:
    """Carries a QueuePlan out: trains, evaluates, writes state and summary after every change."""

    def __init__(self, plan: QueuePlan, registry: Registry, options: QueueOptions, state: QueueState,
                 stop: StopFlag):
        self.plan, self.registry, self.options, self.state, self.stop = plan, registry, options, state, stop
        self.total = len(plan.runs)

    def save(self) -> str:
        """queue.json and the summary files, written; returns the summary's Markdown table."""
        self.state = write_state(self.plan.folder, self.state)
        return write_summary(self.plan.folder, self.state)

    def say(self, name: str, text: str) -> None:
        position = self.plan.runs.index(name) + 1
        print(f"[queue {self.plan.name}] {position}/{self.total} {name}: {text}", flush=True)

    def finished_on_disk(self, name: str) -> RunRecord | None:
        out = self.options.adapters_dir / name
        try:
            record = RunRecord.read(out)
        except UserError:
            return None
        return record if record and record.status == "complete" and adapter_weights(out) else None

    def train(self, name: str) -> Attempt:
        request = request_for(name, self.options)
        try:
            entry = entry_for(self.registry, request)
            check_request(request, entry)
        except UserError as exc:
            return Attempt("failed", error=str(exc), exit_code=2)
        lock = RunLock(self.options.adapters_dir, name)
        try:
            lock.acquire()
        except UserError as exc:
            return Attempt("locked", error=str(exc))
        try:
            return self._train_locked(name, request, entry, lock)
        except Exception as exc:  # noqa: BLE001 - an unattended queue records the crash and goes on
            traceback.print_exc()
            return Attempt("failed", error=f"{type(exc).__name__}: {exc}", exit_code=1)
        finally:
            lock.release()

    def _train_locked(self, name: str, request: LaunchRequest, entry, lock: RunLock) -> Attempt:
        started = time.monotonic()
        try:
            launch = decide(request, self.registry, entry, gather_facts(self.registry, request, entry))
        except UserError as exc:
            return Attempt("failed", error=str(exc), exit_code=2)
        profile = PROFILES[entry.profile]
        est = launch.estimate
        workers = est.world_size if est is not None else workers_here(request, profile)
        price = self.options.usd_per_gpu_hour if self.options.usd_per_gpu_hour is not None else profile.usd_per_gpu_hour
        self.state = update_run(
            self.state, name, status="running", attempts=self.state.run(name).attempts + 1, started_at=utc_now_iso(),
            ended_at=None, profile=profile.name, accelerator=profile.accelerator, workers=workers,
            usd_per_gpu_hour=price, planned_steps=est.steps if est else None,
            planned_hours=est.hours if est else None, planned_cost_usd=est.cost_usd if est else None, error=None)
        self.save()
        if launch.already_done:
            record = RunRecord.read(launch.output_dir)
            return Attempt("complete", steps=record.global_step if record else None, exit_code=0)
        if self.stop.signum is not None:
            return Attempt("interrupted", signum=self.stop.signum)
        resumed = f" (resuming from {launch.resume.name})" if launch.resume else ""
        self.say(name, f"start — {_eta(est, launch.resume)}{resumed}")
        code = execute(launch, lock)
        wall = time.monotonic() - started
        record = RunRecord.read(launch.output_dir)
        status = record.status if record is not None else "failed"
        steps = record.global_step if record is not None else None
        if status == "interrupted":
            return Attempt("interrupted", wall, steps, code, signum=max(code - 128, 0) or signal.SIGINT)
        if status == "complete":
            return Attempt("complete", wall, steps, 0)
        return Attempt("failed", wall, steps, code,
                       error=f"training exited {code}; see the log above and {repo_relative(launch.output_dir)}")

    def record_attempt(self, name: str, a: Attempt) -> None:
        run = self.state.run(name)
        self.state = update_run(self.state, name, status=a.status, ended_at=utc_now_iso(),
                                wall_seconds=run.wall_seconds + a.wall_seconds, steps=a.steps,
                                exit_code=a.exit_code, error=a.error)
        if a.status == "complete" and run.status != "complete":
            self.state = set_eval(self.state, name, EvalState())  # a new adapter: evaluate it again
        self.save()
        took = f" in {duration(a.wall_seconds)}" if a.wall_seconds else ""
        planned = self.state.run(name).planned_hours
        plan = f" (plan {duration(planned * 3600)})" if planned is not None and a.wall_seconds else ""
        if a.status == "complete":
            self.say(name, f"complete — {a.steps} steps{took}{plan}" if a.wall_seconds
                     else f"complete — already trained ({a.steps} steps)")
        elif a.status == "locked":
            if run.status != "locked":  # once, not at every poll
                self.say(name, f"locked by another launch; deferred, then waited for ({a.error})")
        elif a.status == "interrupted":
            self.say(name, f"interrupted{took}; the same command resumes it from its newest checkpoint")
        else:
            go_on = "the queue stops (--stop-on-error)" if self.options.stop_on_error else "the queue goes on"
            self.say(name, f"FAILED{took}: {a.error}; {go_on}")

    # ------------------------------------------------------------ evaluation

    def evaluate(self, names: list[str]) -> int | None:
        """One `python -m eval` over these runs' adapters into the queue's eval/ folder (finished pairs,
        such as the base row's, are reused). Returns the signal that interrupted it, if one did."""
        out = self.plan.folder / "eval"
        dirs = {n: repo_relative(self.options.adapters_dir / n) for n in names}
        argv = eval_argv(list(dirs.values()), repo_relative(out), self.options.eval_limit)
        results_file = out / "results.json"
        before = results_file.stat().st_mtime_ns if results_file.is_file() else None
        for n in names:
            self.say(n, f"evaluating ({' '.join(argv[1:])})")
        result = run_child(argv, dict(os.environ), cwd=REPO_ROOT)
        if result.interrupted_by is not None:
            return result.interrupted_by
        per_run = {}
        if results_file.is_file() and results_file.stat().st_mtime_ns != before:  # this call wrote it
            try:
                per_run = metrics_by_run(json.loads(results_file.read_text(encoding="utf-8")), dirs)
            except (OSError, ValueError, KeyError, TypeError) as exc:  # recorded as each run's eval error
                print(f"queue: cannot read {repo_relative(results_file)}: {exc}", file=sys.stderr)
        for n in names:
            ev = eval_state(result.returncode, repo_relative(out), per_run.get(n))
            self.state = set_eval(self.state, n, ev)
            self.say(n, f"eval {ev.status}" + (f": {ev.error}" if ev.error else
                                              " — " + ", ".join(f"{t} {m.metric} {_metric_text(m)}"
                                                                for t, m in ev.metrics.items())))
        self.save()
        return None


def _metric_text(m: Metric) -> str:
    return "error" if m.value is None else f"{m.value:.3f}"



# ---------------------------------------------------------------- the whole queue


def run_queue(plan: QueuePlan, options: QueueOptions) -> int:
    """Returns 0 when every run finished and evaluated, 1 when one failed, 128+N after signal N."""
    with RunLock(plan.folder.parent, plan.name), StopFlag() as stop:
        registry = plan.registry
        if plan.derived:
            write_sweep_registry(plan.sweep_file, plan.derived, plan.registry)
            registry = load_registry(plan.sweep_file)  # what `--list --config-json` shows is what trains
        state = merge(read_state(plan.folder), fresh_state(plan, options))
        runner = Runner(plan, registry, options, state, stop)
        if is_finished(state):
            print(f"[queue {plan.name}] finished earlier; its table "
                  f"({repo_relative(plan.folder)}/summary.md):", flush=True)
        else:
            try:
                _work(runner)
            except KeyboardInterrupt:  # a second signal: stop now; the cut run is resumed next time
                stop.set(signal.SIGINT)
                for r in runner.state.runs:
                    if r.status == "running":
                        runner.state = update_run(runner.state, r.name, status="interrupted", ended_at=utc_now_iso())
        signum = stop.signum
        runner.state = runner.state.model_copy(update={"outcome": outcome(runner.state, signum is not None)})
        markdown = runner.save()
        code = 128 + signum if signum is not None else 0 if runner.state.outcome == "complete" else 1
        if options.on_finish:
            runner.state = runner.state.model_copy(update={"on_finish": on_finish(list(options.on_finish))})
            markdown = runner.save()
        print(markdown, end="", flush=True)
        written = [*OUTPUTS, *([PNG] if (plan.folder / PNG).is_file() else []), "queue.json"]
        print(f"wrote {repo_relative(plan.folder)}/" + ", ".join(written), file=sys.stderr)
        return code


def _work(runner: Runner) -> None:
    state, options = runner.state, runner.options
    runner.save()
    deferred: list[str] = []
    for name in [r.name for r in state.runs]:
        if runner.stop.signum is not None:
            return
        if not _one(runner, name, deferred):
            return
    if deferred and not _wait_for(runner, deferred):
        return
    if options.eval_mode == "end" and runner.stop.signum is None:
        todo = [r.name for r in runner.state.runs if needs_eval(r, "end")]
        if todo:
            signum = runner.evaluate(todo)
            if signum is not None:
                runner.stop.set(signum)


def _one(runner: Runner, name: str, deferred: list[str]) -> bool:
    """Train (unless finished) and, with --eval after, evaluate one run; False: the queue stops here."""
    run = runner.state.run(name)
    if needs_training(run):
        record = runner.finished_on_disk(name)  # trained by another queue or by hand meanwhile
        attempt = Attempt("complete", steps=record.global_step, exit_code=0) if record else runner.train(name)
        runner.record_attempt(name, attempt)
        if attempt.status == "locked":
            deferred.append(name)
            return True
        if attempt.status == "interrupted":
            runner.stop.set(attempt.signum or signal.SIGINT)
            return False
        if attempt.status == "failed":
            return not runner.options.stop_on_error
    if runner.options.eval_mode == "after" and needs_eval(runner.state.run(name), "after"):
        signum = runner.evaluate([name])
        if signum is not None:
            runner.stop.set(signum)
            return False
    return True


def _wait_for(runner: Runner, deferred: list[str]) -> bool:
    """Runs another launch held: try their locks until free (or --lock-wait passes), then run them."""
    deadline = None if runner.options.lock_wait is None else time.monotonic() + runner.options.lock_wait
    while deferred:
        for name in list(deferred):
            if runner.stop.signum is not None:
                return False
            probe: list[str] = []
            if not _one(runner, name, probe):
                return False
            if not probe:
                deferred.remove(name)
        if not deferred:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            for name in deferred:
                runner.say(name, f"still locked after --lock-wait {runner.options.lock_wait:g} s; skipped "
                                 "(the same command tries again)")
            return True
        pause(POLL_SECONDS)
    return True


def pause(seconds: float) -> None:
    time.sleep(seconds)


def on_finish(argv: list[str]) -> OnFinish:
    """--on-finish: the user's command as an argv list (never a shell), whatever the outcome."""
    print(f"--on-finish: {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        result = run_child(argv, dict(os.environ), cwd=REPO_ROOT)
    except OSError as exc:
        print(f"--on-finish could not start: {exc.strerror or exc}", file=sys.stderr)
        return OnFinish(argv=argv, exit_code=127, error=str(exc.strerror or exc))
    print(f"--on-finish exited {result.returncode}", file=sys.stderr, flush=True)
    return OnFinish(argv=argv, exit_code=result.returncode)


def main(registry: Registry, options: QueueOptions) -> int:
    plan = plan_queue(registry, options)
    if options.dry_run:
        print(format_dry_run(plan, plan_rows(plan, options)))
        return 0
    return run_queue(plan, options)
