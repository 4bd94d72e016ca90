"""Real training on this CPU: finetune.py -> accelerate -> axolotl on the bundled model, a few steps each.

    python -m pytest -m slow tests/train/test_train_integration.py

Each launch costs ~45 s of axolotl start-up (imports, tokenisation, model load) plus a few short steps.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FPB_TRAIN, REPO, cpu_entry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def bundled_model():
    from lora.core.base_model import ensure_base_model

    ensure_base_model()


def launch(workspace, name, *flags, wait=True):
    argv = [sys.executable, str(REPO / "finetune.py"), *workspace.argv(name, *flags)]
    if not wait:
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def assert_finished_adapter(out, steps):
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["exit_code"] == 0, run
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert run["global_step"] == steps
    assert (out / "loss.png").stat().st_size > 1000
    assert run["datasets"][0]["sha256"] and run["versions"]["axolotl"] == "0.19.0"
    return run, cfg


def test_sigterm_mid_run_then_rerun_resumes_to_the_same_final_step(workspace):
    """Kill the launcher with SIGTERM after a checkpoint; the re-run resumes and ends at max_steps."""
    steps = 12  # checkpoints every 3 steps
    workspace.write({"tiny": cpu_entry(max_steps=steps)})
    out = workspace.adapters / "tiny"
    proc = launch(workspace, "tiny", wait=False)
    deadline = time.monotonic() + 400
    while not (out / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 400 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, log[-2000:]
    first = json.loads((out / "run.json").read_text())
    assert first["status"] == "interrupted", first["status"]

    second = launch(workspace, "tiny")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming from" in second.stderr
    run, cfg = assert_finished_adapter(out, steps)
    assert run["resumed_from"] and run["resumed_from"].split("-")[-1] != "0"
    assert cfg["r"] == 4 and not cfg["use_dora"]

    third = launch(workspace, "tiny")  # finished: nothing to do
    assert third.returncode == 0 and "already trained" in third.stdout


def test_four_bit_qlora_trains(workspace):
    workspace.write({"q4": cpu_entry(quant_bits=4)})
    result = launch(workspace, "q4")
    assert result.returncode == 0, result.stderr[-3000:]
    run, cfg = assert_finished_adapter(workspace.adapters / "q4", 2)
    assert run["entry"]["quant_bits"] == 4 and "load_in_4bit: true" in run["recipe"]


def test_dora_on_4bit_trains(workspace):
    # DoRA on an 8-bit base dies on CPU from the second step (bitsandbytes' CPU int8 path); the registry
    # refuses that combination on the cpu profile, so the DoRA path is exercised on NF4 here.
    workspace.write({"dora4": cpu_entry(quant_bits=4, peft_use_dora=True, lora_r=8, max_steps=3)})
    result = launch(workspace, "dora4")
    assert result.returncode == 0, result.stderr[-3000:]
    run, cfg = assert_finished_adapter(workspace.adapters / "dora4", 3)
    assert cfg["use_dora"] is True and cfg["r"] == 8 and "load_in_4bit: true" in run["recipe"]



def two_process_run(workspace, name, **entry):
    workspace.write({name: cpu_entry(max_steps=4, **entry)})
    result = launch(workspace, name, "--cpu-processes", "2")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert '"world_size": 2' in log  # axolotl's config dump, printed by each rank
    out = workspace.adapters / name
    run, _ = assert_finished_adapter(out, 4)
    # one adapter, written once by rank 0: no per-rank copies, and only rank 0 logs the 4 steps
    # (a rank that believes it is a lone process zero would log and save too)
    top = [p for p in out.rglob("adapter_model.safetensors") if "checkpoint-" not in str(p.parent)]
    assert top == [out / "adapter_model.safetensors"]
    assert log.count("{'loss': ") == 4, log.count("{'loss': ")
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    return run, state, log


def test_two_cpu_processes_ddp_gloo(workspace):
    # unpacked and long enough for every FPB row (longest 217 tokens): an epoch is exactly the 3628 rows
    run, state, _ = two_process_run(workspace, "ddp2", sample_packing=False, sequence_len=256)
    assert run["command"][:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"]
    rows = sum(1 for _ in FPB_TRAIN.open())
    assert state["epoch"] == pytest.approx(4 / -(-rows // 2), rel=1e-3)  # the ranks split the rows: 2 per step


def test_two_cpu_processes_deepspeed_zero2(workspace):
    run, _, log = two_process_run(workspace, "zero2", zero_stage=2)
    assert 'deepspeed: "templates/deepspeed/zero2.json"' in run["recipe"]
    assert "DeepSpeed" in log or "deepspeed" in log
