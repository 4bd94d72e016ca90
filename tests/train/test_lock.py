"""Run state: one launch per name (flock + inherited token, real concurrent processes), resume point, --fresh."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from eval.fixtures import run_record
from lora.cli.shims import finetune_main
from lora.core.process import ChildResult
from lora.recipe.registry import UserError
from lora.train.lock import RunLock, lock_path, move_aside, processes_with_token, resume_point
from tests.conftest import REPO, cpu_entry


def make_checkpoint(out, step, complete=True):
    ck = out / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    if complete:
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10, "log_history": []}))
        (ck / "adapter_model.safetensors").write_bytes(b"x")
    return ck


HOLD = """
import sys, time
from pathlib import Path
from lora.train.lock import RunLock
lock = RunLock(Path(sys.argv[1]), "run")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_in_another_process(adapters):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(adapters)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_while_another_launcher_holds_it(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(UserError, match=f"already training here \\(launcher PID {holder.pid}"):
            RunLock(tmp_path, "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path, "run"):  # the kernel dropped the dead launcher's flock: no stale lock
        assert json.loads(lock_path(tmp_path, "run").read_text())["launcher_pid"] == os.getpid()


LAUNCHER_WITH_TRAINER = """
import os, subprocess, sys, time
from pathlib import Path
from lora.train.lock import RunLock
lock = RunLock(Path(sys.argv[1]), "run")
lock.acquire()
# the trainer: its own session (as torchrun workers start theirs), the lock's token in its environment
trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                           env={**os.environ, **lock.env}, start_new_session=True)
lock.record_child(trainer.pid)
print(trainer.pid, flush=True)
time.sleep(60)
"""


def test_a_trainer_outliving_its_launcher_keeps_the_name_locked(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_WITH_TRAINER, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
    trainer_pid = int(launcher.stdout.readline())
    try:
        launcher.kill()  # SIGKILL: no cleanup, its flock released by the kernel
        launcher.wait()
        with pytest.raises(UserError, match=f"training processes still run \\(PIDs {trainer_pid}\\)"):
            RunLock(tmp_path, "run").acquire()
    finally:
        os.kill(trainer_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while trainer_pid in processes_with_token_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by init once killed
    with RunLock(tmp_path, "run"):
        pass


def processes_with_token_of(adapters):
    token = json.loads(lock_path(adapters, "run").read_text() or "{}").get("token")
    return processes_with_token(token) if token else []


RACER = """
import sys, time
from pathlib import Path
from lora.core.errors import UserError
from lora.train.lock import RunLock
adapters, start, trials, me = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for k in range(trials):
    time.sleep(max(0.0, start + 0.6 * k - time.time()))  # every racer tries at the same instant
    try:
        with RunLock(adapters, "run"):
            with open(adapters / f"trial-{k}", "a") as f:
                f.write(me + "\\n")
            time.sleep(0.3)
    except UserError:
        pass
"""


def test_concurrent_launchers_never_both_hold_the_lock(tmp_path):
    racers, trials = 4, 8
    start = time.time() + 3.0  # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start), str(trials), str(i)], cwd=REPO)
             for i in range(racers)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    holders = [len((tmp_path / f"trial-{k}").read_text().split()) for k in range(trials)]
    assert holders == [1] * trials  # exactly one winner each time: never two, never none


def test_resume_point_skips_checkpoints_cut_off_mid_save(tmp_path):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 6, complete=False)
    assert resume_point(tmp_path).name == "checkpoint-4"
    assert resume_point(tmp_path / "nothing") is None


def test_move_aside_never_deletes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "f").write_text("keep")
    when = datetime(2026, 1, 2, 3, 4, 5)
    first = move_aside(out, when)
    out.mkdir()
    second = move_aside(out, when)
    assert first.name == "run.old-20260102-030405" and second.name == "run.old-20260102-030405-2"
    assert (first / "f").read_text() == "keep" and move_aside(out) is None


@pytest.fixture
def failing_child(fake_child):
    fake_child.result = ChildResult(1, None)
    return fake_child


def test_rerun_resumes_from_newest_complete_checkpoint(workspace, failing_child, capsys):
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu"))  # first launch "fails": leaves run.json with this recipe
    out = workspace.adapters / "cpu"
    make_checkpoint(out, 1)
    make_checkpoint(out, 2, complete=False)
    finetune_main(workspace.argv("cpu"))
    argv = failing_child.calls[-1]["argv"]
    assert argv[-2:] == ["--resume_from_checkpoint", str(out / "checkpoint-1")]
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["resumed_from"] == "checkpoint-1"  # portable, in the folder


def test_changed_recipe_refuses_to_resume(workspace, failing_child, capsys):
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu"))
    workspace.write({"cpu": cpu_entry(lora_r=16)})
    assert finetune_main(workspace.argv("cpu")) == 2
    assert "different recipe" in capsys.readouterr().err and len(failing_child.calls) == 1


def test_fresh_moves_the_old_run_aside_and_starts_over(workspace, failing_child):
    workspace.write({"cpu": cpu_entry()})
    out = workspace.adapters / "cpu"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    run_record("cpu", status="complete").write(out)
    assert finetune_main(workspace.argv("cpu")) == 0 and failing_child.calls == []  # finished: nothing to do
    finetune_main(workspace.argv("cpu", "--fresh"))
    assert len(failing_child.calls) == 1 and "--resume_from_checkpoint" not in failing_child.calls[0]["argv"]
    old = [p for p in workspace.adapters.iterdir() if p.name.startswith("cpu.old-")]
    assert len(old) == 1 and (old[0] / "adapter_model.safetensors").exists()
