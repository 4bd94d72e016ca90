"""lora/pod/queue.py through `finetune.py --queue/--match/--sweep`, with the training and eval children patched.

    .venv/bin/python -m pytest tests/pod/test_queue.py -q

The fake trainer writes what axolotl writes (checkpoint-N with trainer_state.json and adapter weights,
the adapter beside them); the fake `python -m eval` writes a results.json with one row per adapter.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from lora.cli.shims import finetune_main
from lora.core.process import ChildResult
from lora.estimate import tokens as plan_tokens
from lora.pod import queue as queue_mod
from lora.pod import queue_plan
from lora.pod.queue_state import read_state
from lora.train import launch as launch_plan
from lora.train.lock import RunLock
from tests.conftest import cpu_entry

ROWS = [{"context": f"Sentence {i}. Answer:", "target": "positive"} for i in range(8)]


class Children:
    """Records every child the queue starts; `outcomes` maps a run name to what its trainer does."""

    def __init__(self, adapters: Path):
        self.adapters = adapters
        self.trained: list[str] = []
        self.train_argv: dict[str, list[str]] = {}
        self.evals: list[list[str]] = []
        self.others: list[list[str]] = []
        self.outcomes: dict[str, str] = {}  # "fail", "interrupt" (after one checkpoint)
        self.on_finish_code = 0
        self.eval_garbage = False  # the fake eval writes a damaged results.json

    def train(self, argv, env, cwd, on_start=None):
        recipe = next(a for a in argv if a.endswith(".yaml"))
        name = Path(recipe).stem
        self.trained.append(name)
        self.train_argv[name] = argv
        out = self.adapters / name
        what = self.outcomes.get(name, "ok")
        for _ in range(what.count("signal")):  # the queue's own handler (a real child has run_child's)
            os.kill(os.getpid(), signal.SIGTERM)
        if what == "fail":
            return ChildResult(1, None)
        max_steps = 2
        steps = 1 if what == "interrupt" else max_steps
        for step in range(1, steps + 1):
            ckpt = out / f"checkpoint-{step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "adapter_model.safetensors").write_bytes(b"w")
            (ckpt / "trainer_state.json").write_text(json.dumps(
                {"global_step": step, "max_steps": max_steps, "log_history": [{"step": step, "loss": 1.0 / step}]}))
        (out / "adapter_model.safetensors").write_bytes(b"w")
        (out / "adapter_config.json").write_text("{}")
        if what == "interrupt":
            self.outcomes.pop(name)  # the next attempt finishes
            return ChildResult(130, signal.SIGINT)
        return ChildResult(0, None)

    def other(self, argv, env, cwd, on_start=None):
        if argv[1:3] == ["-m", "eval"]:
            self.evals.append(argv)
            out = Path(cwd) / argv[argv.index("--out") + 1]
            adapters = [a for a in argv[3:argv.index("--out")]]
            rows = [{"name": "base", "kind": "base", "error": None, "adapter": None, "results": {}}]
            for i, path in enumerate(adapters):
                rows.append({"name": Path(path).name, "kind": "adapter", "error": None, "adapter": {"path": path},
                             "results": {"fpb": {"metrics": {"n": 8, "accuracy": 0.5 + 0.1 * i,
                                                             "ci": {"accuracy": [0.4 + 0.1 * i, 0.6 + 0.1 * i]}}}}})
            out.mkdir(parents=True, exist_ok=True)
            text = "{" if self.eval_garbage else json.dumps({"tasks": {"fpb": {"headline": "accuracy"}}, "rows": rows})
            (out / "results.json").write_text(text)
            return ChildResult(0, None)
        self.others.append(argv)
        return ChildResult(self.on_finish_code, None)


@pytest.fixture
def children(workspace, monkeypatch):
    kids = Children(workspace.adapters)
    monkeypatch.setattr(launch_plan, "run_child", kids.train)
    monkeypatch.setattr(queue_mod, "run_child", kids.other)
    # the plan counts tokens by characters instead of loading the tokenizer (transformers: ~20 s here)
    monkeypatch.setattr(plan_tokens, "_local_tokenizer_dir", lambda base_model, repo_root: None)
    return kids


@pytest.fixture
def registry(workspace):
    data = workspace.root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    entries = {n: cpu_entry(dataset_path=str(data)) for n in ("a", "b", "c")}
    entries["broken"] = cpu_entry(dataset_path=str(workspace.root / "missing.jsonl"))
    workspace.write(entries)
    return workspace


def run(workspace, *args):
    return finetune_main(workspace.argv(*args))


def state_of(workspace):
    folders = list((workspace.adapters / "queues").iterdir())
    folders = [f for f in folders if f.is_dir()]
    assert len(folders) == 1, folders
    return folders[0], read_state(folders[0])


# ---------------------------------------------------------------- the queue


def test_queue_trains_in_order_evaluates_each_and_writes_one_table(registry, children, capsys):
    assert run(registry, "--queue", "a", "b", "c") == 0
    assert children.trained == ["a", "b", "c"]
    assert [Path(e[3]).name for e in children.evals] == ["a", "b", "c"]  # one eval per finished run
    folder, state = state_of(registry)
    assert folder.name.startswith("queue-a-and-2-more-")
    assert [r.status for r in state.runs] == ["complete"] * 3 and state.outcome == "complete"
    assert [r.steps for r in state.runs] == [2, 2, 2]
    assert state.run("a").eval.metrics["fpb"].value == 0.5 and state.run("a").eval.metrics["fpb"].low == 0.4
    out = capsys.readouterr().out
    assert "1/3 a: start — plan" in out and "1/3 a: complete — 2 steps in" in out
    table = (folder / "summary.md").read_text()
    assert "| a | complete | 2 |" in table and "0.500 [0.400, 0.600]" in table
    assert "python finetune.py --queue a b c" in table
    assert json.loads((folder / "summary.json").read_text())["totals"]["complete"] == 3
    assert "fpb,accuracy,0.5,0.4,0.6,8" in (folder / "summary.csv").read_text()


def test_rerun_of_a_finished_queue_prints_the_table_and_starts_nothing(registry, children, capsys):
    assert run(registry, "--queue", "a", "b") == 0
    capsys.readouterr()
    trained, evals = list(children.trained), len(children.evals)
    assert run(registry, "--queue", "a", "b") == 0
    out = capsys.readouterr().out
    assert children.trained == trained and len(children.evals) == evals
    assert "finished earlier" in out and "| b | complete | 2 |" in out


def test_a_failing_entry_in_the_middle_does_not_stop_the_others(registry, children):
    children.outcomes["b"] = "fail"
    assert run(registry, "--queue", "a", "broken", "b", "c") == 1
    assert children.trained == ["a", "b", "c"]  # broken never launched: its dataset is missing
    _, state = state_of(registry)
    assert [r.status for r in state.runs] == ["complete", "failed", "failed", "complete"]
    assert "missing.jsonl" in state.run("broken").error and state.run("b").exit_code == 1
    assert state.run("b").eval.status == "pending" and state.outcome == "failed"


def test_stop_on_error_stops_and_the_rerun_retries_the_failed_run(registry, children):
    children.outcomes["b"] = "fail"
    assert run(registry, "--queue", "a", "b", "c", "--stop-on-error") == 1
    assert children.trained == ["a", "b"]
    children.outcomes.clear()
    assert run(registry, "--queue", "a", "b", "c", "--stop-on-error") == 0
    assert children.trained == ["a", "b", "b", "c"]


def test_interrupted_run_stops_the_queue_and_the_same_command_resumes_it(registry, children):
    children.outcomes["b"] = "interrupt"
    assert run(registry, "--queue", "a", "b", "c") == 130
    _, state = state_of(registry)
    assert [r.status for r in state.runs] == ["interrupted" if r.name == "b" else
                                              "complete" if r.name == "a" else "pending" for r in state.runs]
    assert state.outcome == "interrupted"
    assert run(registry, "--queue", "a", "b", "c") == 0
    assert children.trained == ["a", "b", "b", "c"]
    resume = children.train_argv["b"]
    assert resume[resume.index("--resume_from_checkpoint") + 1].endswith("b/checkpoint-1")
    _, state = state_of(registry)
    assert [r.steps for r in state.runs] == [2, 2, 2] and state.run("b").attempts == 2


def test_a_signal_outside_a_child_stops_the_queue_after_the_current_step(registry, children, capsys):
    children.outcomes["a"] = "signal"
    assert run(registry, "--queue", "a", "b", "--eval", "none") == 128 + signal.SIGTERM
    assert children.trained == ["a"]
    _, state = state_of(registry)
    assert [r.status for r in state.runs] == ["complete", "pending"] and state.outcome == "interrupted"
    assert "stopping after the current step" in capsys.readouterr().err


def test_a_second_signal_stops_at_once_and_leaves_the_state_consistent(registry, children):
    children.outcomes["a"] = "signal signal"
    assert run(registry, "--queue", "a", "b", "--eval", "none") == 128 + signal.SIGTERM
    _, state = state_of(registry)
    assert [r.status for r in state.runs] == ["interrupted", "pending"] and state.outcome == "interrupted"
    children.outcomes.clear()
    assert run(registry, "--queue", "a", "b", "--eval", "none") == 0
    assert children.trained == ["a", "a", "b"]


def test_a_run_left_running_by_a_lost_machine_is_resumed(registry, children):
    children.outcomes["b"] = "interrupt"
    run(registry, "--queue", "a", "b")
    folder, state = state_of(registry)
    raw = json.loads((folder / "queue.json").read_text())
    raw["runs"][1]["status"] = "running"  # what a SIGKILL mid-run leaves
    (folder / "queue.json").write_text(json.dumps(raw))
    assert run(registry, "--queue", "a", "b") == 0
    assert children.trained == ["a", "b", "b"]


def test_eval_end_is_one_eval_call_over_every_adapter(registry, children):
    assert run(registry, "--queue", "a", "b", "--eval", "end", "--eval-limit", "5") == 0
    assert len(children.evals) == 1
    argv = children.evals[0]
    assert [Path(p).name for p in argv[3:5]] == ["a", "b"] and argv[-2:] == ["--limit", "5"]
    _, state = state_of(registry)
    assert state.run("b").eval.metrics["fpb"].value == pytest.approx(0.6)


def test_a_damaged_results_json_is_an_eval_failure_and_the_queue_goes_on(registry, children, capsys):
    children.eval_garbage = True
    assert run(registry, "--queue", "a", "b") == 1
    assert children.trained == ["a", "b"]
    _, state = state_of(registry)
    assert [r.eval.status for r in state.runs] == ["failed", "failed"] and "without a row" in state.run("a").eval.error
    assert "cannot read" in capsys.readouterr().err


def test_eval_none_runs_no_eval(registry, children):
    assert run(registry, "--queue", "a", "--eval", "none") == 0
    folder, state = state_of(registry)
    assert children.evals == [] and state.run("a").eval.status == "pending" and state.outcome == "complete"
    assert "| a | complete | 2 |" in (folder / "summary.md").read_text()
    assert "| not asked |" in (folder / "summary.md").read_text()


def test_match_queues_every_matching_entry_in_registry_order(registry, children):
    assert run(registry, "--match", "[ca]", "--eval", "none") == 0
    assert children.trained == ["a", "c"]


def test_on_finish_runs_an_argv_whatever_the_outcome_and_reports_its_exit_code(registry, children):
    children.outcomes["a"] = "fail"
    children.on_finish_code = 3
    argv = [*registry.argv("--queue", "a", "--eval", "none"), "--on-finish", "echo", "done; rm -rf /"]
    assert finetune_main(argv) == 1
    assert children.others == [["echo", "done; rm -rf /"]]  # an argv: the shell never sees it
    folder, state = state_of(registry)
    assert state.on_finish.exit_code == 3
    assert "--on-finish `echo done; rm -rf /`: exit code 3" in (folder / "summary.md").read_text()


# ---------------------------------------------------------------- locks: never trained twice


def test_a_locked_run_is_deferred_and_skipped_after_lock_wait(registry, children):
    with RunLock(registry.adapters, "b"):
        assert run(registry, "--queue", "a", "b", "c", "--eval", "none", "--lock-wait", "0") == 1
    assert children.trained == ["a", "c"]
    assert state_of(registry)[1].run("b").status == "locked"


def test_a_locked_run_finished_by_the_other_launch_is_not_trained_again(registry, children, monkeypatch):
    lock = RunLock(registry.adapters, "b")
    lock.acquire()

    def the_other_queue_finishes_b(_seconds):
        children.train(["x", str(registry.recipes / "b.yaml")], {}, None)
        (registry.adapters / "b" / "run.json").write_text(json.dumps(_complete_record("b")))
        lock.release()

    monkeypatch.setattr(queue_mod, "pause", the_other_queue_finishes_b)
    assert run(registry, "--queue", "a", "b", "--eval", "none") == 0
    assert children.trained == ["a", "b"]  # b once: by "the other queue"
    assert state_of(registry)[1].run("b").status == "complete"


def _complete_record(name):
    from eval.fixtures import run_record

    return run_record(name=name, status="complete", global_step=2).to_json()


def test_a_second_queue_of_the_same_command_is_refused_while_the_first_runs(registry, children, capsys):
    name = queue_plan.derive_queue_name(queue_plan.QueueOptions(names=("a",)), registry.registry)
    with RunLock(registry.adapters / "queues", name):
        assert run(registry, "--queue", "a") == 2
    assert "already training" in capsys.readouterr().err and children.trained == []


# ---------------------------------------------------------------- sweeps


def test_sweep_writes_a_listable_registry_queues_it_and_plots_the_metric(registry, children, capsys):
    assert run(registry, "a", "--sweep", "lora_r=4,8") == 0
    assert children.trained == ["a-lora_r4", "a-lora_r8"]
    folder, state = state_of(registry)
    assert state.sweep_keys == ["lora_r"] and state.run("a-lora_r8").swept == {"lora_r": 8}
    assert (folder / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "| a-lora_r8 | complete | 8 | 2 |" in (folder / "summary.md").read_text()
    capsys.readouterr()
    assert finetune_main(["--list", "--config-json", str(folder / "sweep.json")]) == 0
    assert "a-lora_r4" in capsys.readouterr().out


def test_sweep_dry_run_prints_each_plan_and_the_total_and_launches_nothing(registry, children, capsys):
    assert run(registry, "a", "--sweep", "lora_r=4,8", "seed=1,2", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.count("steps") == 5 and "a-lora_r8-seed2" in out and "total: 8 steps" in out
    assert children.trained == [] and not (registry.adapters / "queues").exists()


def test_sweep_over_64_runs_needs_yes(registry, children, capsys, monkeypatch):
    monkeypatch.setattr(queue_plan, "plan_rows", lambda plan, options: [
        {"cost_usd": 0.5} for _ in plan.runs])
    assert run(registry, "a", "--sweep", "lora_r=1,2,3,4,5,6,7,8,9", "seed=1,2,3,4,5,6,7,8") == 2
    err = capsys.readouterr().err
    assert "72 runs (over 64), total plan cost $36.00; add --yes" in err and children.trained == []


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing written


@pytest.mark.parametrize("args, fragment", [
    (("--queue", "a", "bb"), "unknown run 'bb'; did you mean 'b'"),
    (("--match", "z*"), "--match 'z*' matches none of the 4 entries"),
    (("a", "--sweep", "lora_rr=4,8"), "no key 'lora_rr'; did you mean 'lora_r'"),
    (("a", "--sweep", "lora_r=4,x"), "--sweep lora_r=x: key 'lora_r'"),
    (("--sweep", "lora_r=4"), "a sweep needs the entry to sweep first"),
    (("--queue", "a", "--fresh"), "finlora queue does not take --fresh"),
    (("--queue", "a", "--plan"), "finlora queue does not take --plan"),
    (("a", "--stop-on-error"), "finlora train does not take --stop-on-error"),
    (("--queue", "a", "--eval-limit", "0"), "--eval-limit 0"),
    (("--queue", "a", "--queue-name", "../x"), "--queue-name '../x'"),
])
def test_bad_input_is_one_line_exit_2_before_anything_runs(registry, children, capsys, args, fragment):
    assert run(registry, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert children.trained == [] and not (registry.adapters / "queues").exists()


def test_on_finish_without_a_command_is_bad_input(registry, children, capsys):
    assert finetune_main([*registry.argv("--queue", "a"), "--on-finish"]) == 2
    assert "--on-finish needs a command" in capsys.readouterr().err and children.trained == []


def test_queue_name_is_deterministic_and_differs_by_command(tmp_path):
    reg = tmp_path / "r.json"
    one = queue_plan.derive_queue_name(queue_plan.QueueOptions(names=("a", "b")), reg)
    assert one == queue_plan.derive_queue_name(queue_plan.QueueOptions(names=("a", "b")), reg)
    assert one != queue_plan.derive_queue_name(queue_plan.QueueOptions(names=("b", "a")), reg)
    assert queue_plan.derive_queue_name(queue_plan.QueueOptions(match="sent*"), reg).startswith("match-sent_-")
