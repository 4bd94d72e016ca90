"""Run state: one launch per name (PID lock, stale locks taken over), resume point, --fresh."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from lora import cli
from lora.launch import ChildResult
from lora.registry import UserError
from lora.runstate import RunLock, move_aside, resume_point
from tests.conftest import cpu_entry


def make_checkpoint(out, step, complete=True):
    ck = out / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    if complete:
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10, "log_history": []}))
        (ck / "adapter_model.safetensors").write_bytes(b"x")
    return ck


def test_lock_refuses_a_second_live_owner(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(UserError, match=f"already training here \\(PID {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text().strip() != str(dead.pid)
    assert not (tmp_path / ".lock").exists()


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
def fake_child(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run_child", lambda argv, env, cwd: calls.append(argv) or ChildResult(1, None))
    return calls


def test_rerun_resumes_from_newest_complete_checkpoint(workspace, fake_child, capsys):
    workspace.write({"cpu": cpu_entry()})
    cli.main(workspace.argv("cpu"))  # first launch "fails": leaves run.json with this recipe
    out = workspace.adapters / "cpu"
    make_checkpoint(out, 1)
    make_checkpoint(out, 2, complete=False)
    cli.main(workspace.argv("cpu"))
    argv = fake_child[-1]
    assert argv[-2:] == ["--resume_from_checkpoint", str(out / "checkpoint-1")]
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(out / "checkpoint-1")


def test_changed_recipe_refuses_to_resume(workspace, fake_child, capsys):
    workspace.write({"cpu": cpu_entry()})
    cli.main(workspace.argv("cpu"))
    workspace.write({"cpu": cpu_entry(lora_r=16)})
    assert cli.main(workspace.argv("cpu")) == 2
    assert "different recipe" in capsys.readouterr().err and len(fake_child) == 1


def test_fresh_moves_the_old_run_aside_and_starts_over(workspace, fake_child):
    workspace.write({"cpu": cpu_entry()})
    out = workspace.adapters / "cpu"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    (out / "run.json").write_text(json.dumps({"status": "complete"}))
    assert cli.main(workspace.argv("cpu")) == 0 and fake_child == []  # finished: nothing to do
    cli.main(workspace.argv("cpu", "--fresh"))
    assert len(fake_child) == 1 and "--resume_from_checkpoint" not in fake_child[0]
    old = [p for p in workspace.adapters.iterdir() if p.name.startswith("cpu.old-")]
    assert len(old) == 1 and (old[0] / "adapter_model.safetensors").exists()
