"""lora/train/launch.py: decide() is pure (facts in, LaunchPlan out) and decides resume / done / fresh.

    .venv/bin/python -m pytest tests/train/test_launch.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest

from eval.fixtures import run_record
from lora.core.errors import UserError
from lora.recipe.registry import load_registry
from lora.train.launch import Facts, FolderState, LaunchRequest, decide, entry_for
from tests.conftest import cpu_entry


@pytest.fixture
def setup(workspace):
    workspace.write({"cpu": cpu_entry(), "gpu": cpu_entry(profile="a5000x4", base_model="meta-llama/Llama-3.1-8B")})
    registry = load_registry(workspace.registry)

    def request(name="cpu", **kw):
        return LaunchRequest(name=name, recipes_dir=workspace.recipes, adapters_dir=workspace.adapters, **kw)

    return workspace, registry, request


def facts(folder: FolderState | None = None, workers=1):
    return Facts(workers=workers, environ={"PATH": "/usr/bin", "HF_TOKEN": "hf_x"}, offline=True,
                 folder=folder or FolderState())


def test_decide_writes_nothing_and_is_deterministic(setup):
    workspace, registry, request = setup
    req = request()
    a = decide(req, registry, entry_for(registry, req), facts())
    b = decide(req, registry, entry_for(registry, req), facts())
    assert a == b and workspace.written() == []
    assert a.argv[:3] == ["accelerate", "launch", "--cpu"] and a.recipe_path == workspace.recipes / "cpu.yaml"
    assert a.env["HF_HUB_OFFLINE"] == "1" and a.output_dir == workspace.adapters / "cpu"


def test_decide_resumes_from_the_folder_state_and_fresh_ignores_it(setup):
    _, registry, request = setup
    ckpt = Path("/somewhere/checkpoint-7")
    req = request()
    plan = decide(req, registry, entry_for(registry, req), facts(FolderState(resume=ckpt)))
    assert plan.resume == ckpt and plan.argv[-2:] == ["--resume_from_checkpoint", str(ckpt)]
    fresh = request(fresh=True)
    plan = decide(fresh, registry, entry_for(registry, fresh), facts(FolderState(resume=ckpt)))
    assert plan.resume is None and plan.move_aside and "--resume_from_checkpoint" not in plan.argv


def test_decide_knows_a_finished_run_and_refuses_a_changed_recipe(setup):
    _, registry, request = setup
    req = request()
    entry = entry_for(registry, req)
    done = FolderState(record=run_record("cpu", status="complete"), has_weights=True)
    assert "already trained" in decide(req, registry, entry, facts(done)).already_done
    other = FolderState(record=run_record("cpu", status="failed", recipe="# another recipe\n"))
    with pytest.raises(UserError, match="different recipe"):
        decide(req, registry, entry, facts(other))


def test_zero_override_leaves_the_registry_untouched(setup):
    _, registry, request = setup
    req = request("gpu", zero=3)
    assert entry_for(registry, req).zero_stage == 3 and registry.get("gpu").zero_stage is None
    plan = decide(req, registry, entry_for(registry, req), facts(workers=4))
    assert "templates/deepspeed/zero3.json" in plan.argv


def test_training_records_the_child_trees_compute_in_run_json(setup, monkeypatch):
    """execute() samples the child it starts (on_start hands over its pid): run.json gets a "train" phase
    whose peak RSS is the child's (~150 MB held), not the parent's."""
    import subprocess
    import sys

    from lora.core.process import ChildResult
    from lora.core.run_record import RunRecord
    from lora.train import launch as launch_plan
    from lora.train.lock import RunLock

    monkeypatch.setattr(launch_plan, "COMPUTE_INTERVAL", 0.05)
    workspace, registry, request = setup
    req = request()

    def run_child(argv, env, cwd, on_start=None):
        proc = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(150 << 20); time.sleep(1)"])
        on_start(proc.pid)
        return ChildResult(proc.wait(), None)

    monkeypatch.setattr(launch_plan, "run_child", run_child)
    plan = decide(req, registry, entry_for(registry, req), facts())
    with RunLock(workspace.adapters, "cpu") as lock:
        assert launch_plan.execute(plan, lock) == 1  # no adapter written: failed, and still recorded
    compute = RunRecord.read(req.output_dir).compute
    train = compute.phases[0]
    assert train.name == "train" and train.wall_seconds >= 1.0
    assert 150 << 20 < train.peak_rss_bytes < 1 << 30
