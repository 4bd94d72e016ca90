"""The training CLI's modes through `main(argv)` (child process and GPU detection faked: conftest's fake_child).

    .venv/bin/python -m pytest tests/cli/test_finetune.py -q
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from eval.fixtures import run_record
from lora.cli.shims import finetune_main
from lora.core.process import ChildResult
from lora.train import launch as launch_plan
from tests.conftest import REPO, cpu_entry

FORMULA = str(REPO / "data" / "train" / "formula_train.jsonl")
TAIL = ["--dynamo_backend", "no", "-m", "axolotl.cli.train"]


def gpu_entry(**kw):
    fields = dict(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA, profile="a5000x4", quant_bits=8)
    return cpu_entry(**{**fields, **kw})


@pytest.fixture
def launched(fake_child):
    return fake_child


def test_cli_pod_launch_uses_all_visible_gpus_and_deepspeed(workspace, launched, capsys):
    workspace.write({"pod": gpu_entry()})
    code = finetune_main(workspace.argv("pod"))
    assert code == 1  # the fake child trained nothing: not presented as finished
    (call,) = launched.calls
    recipe = str(workspace.recipes / "pod.yaml")
    assert call["argv"] == ["accelerate", "launch", "--num_processes", "4", "--num_machines", "1", "--use_deepspeed",
                            "--deepspeed_config_file", "templates/deepspeed/zero2.json", "--mixed_precision", "bf16",
                            *TAIL, recipe, "--save_steps", "2"]  # from the plan: <= 30 min of work per checkpoint
    assert call["cwd"] == REPO
    assert (workspace.recipes / "pod.yaml").is_file()
    run = json.loads((workspace.adapters / "pod" / "run.json").read_text())
    assert run["status"] == "failed" and run["command"] == call["argv"]


def test_cli_gpus_flag_and_multinode(workspace, launched):
    workspace.write({"pod": gpu_entry()})
    finetune_main(workspace.argv("pod", "--gpus", "2", "--num-machines", "2", "--machine-rank", "0",
                            "--main-process-ip", "10.1.2.3", "--main-process-port", "29600"))
    argv = launched.calls[0]["argv"]
    assert argv[2:8] == ["--num_processes", "4", "--num_machines", "2", "--machine_rank", "0"]
    assert argv[argv.index("--main_process_ip") + 1] == "10.1.2.3"
    assert argv[argv.index("--main_process_port") + 1] == "29600"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gpus", "8"], "--gpus 8: only 4 CUDA GPU(s) found"),
        (["--machine-rank", "1", "--num-machines", "2"], "needs --main-process-ip"),
        (["--num-machines", "2", "--main-process-ip", "1.2.3.4"], "needs --machine-rank"),
        (["--machine-rank", "2", "--num-machines", "2", "--main-process-ip", "1.2.3.4"], "must be below --num-machines 2"),
    ],
)
def test_cli_bad_launch_flags(workspace, launched, capsys, flags, message):
    workspace.write({"pod": gpu_entry()})
    code = finetune_main(workspace.argv("pod", *flags))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert launched.calls == [] and workspace.written() == []


def test_cli_cpu_processes(workspace, launched, monkeypatch):
    monkeypatch.setattr(launch_plan.os, "cpu_count", lambda: 2)
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu", "--cpu-processes", "2"))
    argv = launched.calls[0]["argv"]
    assert argv[:6] == ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "lora.train.axolotl_cpu_ranks"]
    assert argv[6] == str(workspace.recipes / "cpu.yaml")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cpu-processes", "3"], "--cpu-processes 3: this machine has 2 CPU core(s)"),
        (["--cpu-processes", "0"], "--cpu-processes 0: give at least 1"),
        (["--gpus", "2"], "--gpus is for GPU profiles; a cpu entry takes --cpu-processes N"),
        (["--num-machines", "2", "--machine-rank", "0", "--main-process-ip", "1.2.3.4"],
         "multi-node runs are for GPU profiles"),
    ],
)
def test_cli_bad_cpu_flags(workspace, launched, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(launch_plan.os, "cpu_count", lambda: 2)
    workspace.write({"cpu": cpu_entry()})
    code = finetune_main(workspace.argv("cpu", *flags))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert launched.calls == [] and workspace.written() == []


def test_cli_cpu_zero_needs_two_processes_and_keeps_deepspeed(workspace, launched, monkeypatch, capsys):
    monkeypatch.setattr(launch_plan.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # even exported by the user's shell
    workspace.write({"cpu": cpu_entry(zero_stage=2)})
    assert finetune_main(workspace.argv("cpu")) == 2
    assert "add --cpu-processes 2" in capsys.readouterr().err and launched.calls == []
    finetune_main(workspace.argv("cpu", "--cpu-processes", "2"))
    call = launched.calls[0]
    assert call["argv"][:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"]
    assert 'deepspeed: "templates/deepspeed/zero2.json"' in (workspace.recipes / "cpu.yaml").read_text()
    assert "ACCELERATE_USE_CPU" not in call["env"]  # it would make the Trainer drop DeepSpeed
    launched.calls.clear()
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu", "--cpu-processes", "2", "--fresh"))
    assert launched.calls[0]["env"]["ACCELERATE_USE_CPU"] == "true"  # plain DDP: MULTI_CPU via accelerate


def test_cpu_processes_on_a_gpu_entry_is_refused(workspace, launched, capsys):
    workspace.write({"pod": gpu_entry()})
    assert finetune_main(workspace.argv("pod", "--cpu-processes", "2")) == 2
    assert "--cpu-processes is for cpu entries" in capsys.readouterr().err and launched.calls == []


def test_cuda_recipe_on_cpu_machine_is_one_line(workspace, launched, capsys):
    launched.gpus = 0
    workspace.write({"pod": gpu_entry()})
    code = finetune_main(workspace.argv("pod"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no CUDA GPU" in err and "--dry-run" in err and "Traceback" not in err
    assert launched.calls == [] and workspace.written() == []


def test_cpu_launch_argv_env_and_no_secrets(workspace, launched, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("AXOLOTL_DO_NOT_TRACK", raising=False)
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu"))
    call = launched.calls[0]
    assert call["argv"][:8] == ["accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                                "--mixed_precision"]
    env = call["env"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1" and env["AXOLOTL_DO_NOT_TRACK"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    for path in workspace.written():
        if path.is_file():
            assert "hf_secret_value_123" not in path.read_text(errors="ignore"), path


def test_child_exit_code_passes_through_and_partial_output_is_not_finished(workspace, launched):
    launched.result = ChildResult(3, None)
    workspace.write({"cpu": cpu_entry()})
    assert finetune_main(workspace.argv("cpu")) == 3
    run = json.loads((workspace.adapters / "cpu" / "run.json").read_text())
    assert run["status"] == "failed" and run["exit_code"] == 3 and run["ended_at"]


def test_interrupt_is_recorded_even_when_axolotl_exits_zero(workspace, launched):
    launched.result = ChildResult(0, signal.SIGINT)
    workspace.write({"cpu": cpu_entry()})
    assert finetune_main(workspace.argv("cpu")) == 130
    run = json.loads((workspace.adapters / "cpu" / "run.json").read_text())
    assert run["status"] == "interrupted"


def test_finished_run_is_not_retrained(workspace, launched, capsys):
    workspace.write({"cpu": cpu_entry()})
    out = workspace.adapters / "cpu"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"x")
    run_record(out.name, status="complete", ended_at="2026-01-01T00:00:00+00:00").write(out)
    assert finetune_main(workspace.argv("cpu")) == 0
    assert launched.calls == [] and "already trained" in capsys.readouterr().out


def test_run_json_records_the_facts(workspace, launched):
    workspace.write({"cpu": cpu_entry()})
    finetune_main(workspace.argv("cpu"))
    run = json.loads((workspace.adapters / "cpu" / "run.json").read_text())
    assert run["prompt_format"]["name"] == "chatml" and "{context}" in run["prompt_format"]["template"]
    assert run["entry"]["lora_r"] == 4 and run["recipe"].startswith("# Generated by finetune.py")
    assert len(run["datasets"][0]["sha256"]) == 64 and run["versions"]["axolotl"] == "0.19.0"
    assert run["started_at"] and run["git"].keys() == {"commit", "dirty"}


def test_dry_run_launches_nothing(workspace, launched, capsys):
    workspace.write({"pod": gpu_entry()})
    assert finetune_main(workspace.argv("pod", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "command: accelerate launch --num_processes 4" in out and launched.calls == []
    assert not workspace.adapters.exists()


def test_list_shows_missing_data(capsys):
    assert finetune_main(["--list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("sentiment_llama_3_1_8b_8bits_r8 "))
    assert "MISSING data/train/finlora_sentiment_train.jsonl" in line and "8bits_r8" in line
    assert "yes" in next(l for l in out.splitlines() if l.startswith("sentiment_smollm2_cpu "))


def test_missing_finlora_data_refuses_launch(launched, capsys):
    assert finetune_main(["sentiment_llama_3_1_8b_8bits_r8"]) == 2
    assert "finlora_sentiment_train.jsonl" in capsys.readouterr().err and launched.calls == []


def test_zero_flag_overrides_the_entry_and_is_validated(workspace, launched, capsys):
    workspace.write({"q8": gpu_entry(), "q4": gpu_entry(quant_bits=4)})
    assert finetune_main(workspace.argv("q8", "--zero", "3")) == 2
    assert "ZeRO-3 cannot partition bitsandbytes 8-bit" in capsys.readouterr().err
    finetune_main(workspace.argv("q4", "--zero", "3"))
    argv = launched.calls[-1]["argv"]
    assert argv[argv.index("--deepspeed_config_file") + 1] == "templates/deepspeed/zero3.json"
    assert "bnb_4bit_quant_storage: bfloat16" in (workspace.recipes / "q4.yaml").read_text()


def test_plan_json_for_a_pod_entry(capsys):
    assert finetune_main(["formula_llama_3_1_8b_8bits_r8", "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {"peak_gb_per_gpu", "steps", "hours", "cost_usd", "fits"} <= plan.keys()
    assert 8 < plan["peak_gb_per_gpu"] < 24 and plan["fits"] is True and plan["steps"] > 0


def test_plan_without_architecture_facts_says_what_is_missing(workspace, capsys):
    workspace.write({"x": gpu_entry(base_model="someone/unknown-model-7b")})
    assert finetune_main(workspace.argv("x", "--plan")) == 2
    err = capsys.readouterr().err
    assert "someone/unknown-model-7b" in err and len(err.strip().splitlines()) == 1



def test_a_target_module_the_model_lacks_is_refused_at_dry_run(workspace, capsys):
    workspace.write({"run": cpu_entry(target_modules=["q_proj", "nonexistent_proj"])})
    assert finetune_main(workspace.argv("run", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: target_modules:") and "has no linear module nonexistent_proj" in err
    assert err.count("\n") == 1 and workspace.written() == []


def test_list_shows_the_last_runs_status_wall_time_and_peak_rss(workspace, capsys):
    from lora.core.compute import ComputeRecord, PhaseCompute

    workspace.write({"done": cpu_entry(), "old": cpu_entry(), "never": cpu_entry(), "broken": cpu_entry()})
    train = PhaseCompute(name="train", wall_seconds=381.0, peak_rss_bytes=2_100_000_000)
    compute = ComputeRecord(interval_seconds=1.0, cpu_count=2, total=train.model_copy(update={"name": "total"}),
                            phases=[train])
    run_record("done", compute=compute).write(workspace.adapters / "done")
    run_record("old", status="failed").write(workspace.adapters / "old")  # written before compute tracking
    (workspace.adapters / "broken").mkdir()
    (workspace.adapters / "broken" / "run.json").write_text("{")
    assert finetune_main(workspace.argv("--list")) == 0
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines() if l}
    assert "complete 6m21s, 2.1 GB RSS" in lines["done"]
    assert "failed" in lines["old"] and "RSS" not in lines["old"]
    assert "unreadable run.json" in lines["broken"] and " – " in lines["never"]
