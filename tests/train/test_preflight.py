"""lora/train/preflight.py: one test per failure, over faked facts; then --check and a GPU launch on this CPU machine.

    .venv/bin/python -m pytest tests/train/test_preflight.py -q
"""
from __future__ import annotations

import json

import pytest

from lora.cli.shims import finetune_main
from lora.core.errors import UserError
from lora.estimate import plan_for_entry
from lora.recipe.profiles import PROFILES, GpuInfo
from lora.recipe.registry import load_registry
from lora.train import launch as launch_plan
from lora.train.preflight import (
    Needs,
    check_attention,
    check_bitsandbytes,
    check_cuda,
    check_disk,
    check_gpus,
    check_memory,
    check_model,
    check_output,
    check_token,
    failed,
    gather,
    needs_for,
    require,
    run_checks,
    torch_fix,
)
from tests.conftest import REPO, cpu_entry, fake_machine

FORMULA = str(REPO / "data" / "train" / "formula_train.jsonl")


def needs(**kw) -> Needs:
    fields = dict(name="pod", profile=PROFILES["a5000x4"], gpus_requested=None, quant_bits=8, attention_requested=None,
                  base_model="meta-llama/Llama-3.1-8B-Instruct", output_dir="lora_adapters/pod", peak_gb=12.0,
                  download_gb=15.0, checkpoints_gb=0.2)
    return Needs(**{**fields, **kw})


@pytest.fixture(scope="module")
def pod_plan():
    """The real plan of an 8-bit Llama-3.1-8B entry on one A5000 (peak ~12.7 GB)."""
    from lora.recipe.registry import parse_entry

    registry = load_registry(REPO / "finetune_configs.json")
    entry = parse_entry("x", {**registry.get("formula_llama_3_1_8b_8bits_r8").model_dump(exclude_unset=True),
                              "profile": "a5000x1"})
    return plan_for_entry(registry, entry, num_gpus=1)


def test_a_healthy_pod_passes_every_check():
    findings = run_checks(fake_machine(4, bnb_error=None), needs())
    assert failed(findings) == [] and [f.check for f in findings] == [
        "cuda", "gpus", "memory", "bitsandbytes", "attention", "disk", "model", "output"]
    require(findings)  # no raise


def test_torch_missing():
    assert "torch does not import" in check_cuda(fake_machine(0, torch_version=None)).message


def test_cpu_build_of_torch_names_the_cpu_entry_and_the_gpu_fix():
    f = check_cuda(fake_machine(0, torch_version="2.13.0+cpu", torch_cuda=None))
    assert f.level == "FAIL" and "CPU build" in f.message and "sentiment_smollm2_cpu" in f.message
    assert "https://download.pytorch.org/whl/cu" in f.message


def test_no_driver():
    f = check_cuda(fake_machine(0, driver_cuda=None))
    assert f.level == "FAIL" and "no NVIDIA driver" in f.message


def test_driver_older_than_torchs_cuda_gives_both_versions_and_the_install_command():
    f = check_cuda(fake_machine(0, torch_version="2.11.0+cu128", torch_cuda="12.8", driver_cuda="12.4"))
    assert f.level == "FAIL"
    assert "runs CUDA 12.4" in f.message and "built for CUDA 12.8" in f.message
    assert "pip install --force-reinstall torch==2.11.0 --index-url https://download.pytorch.org/whl/cu124" in f.message


def test_torch_fix_picks_the_newest_index_the_driver_runs():
    assert "whl/cu126" in torch_fix("2.11.0", "12.7") and "whl/cu118" in torch_fix(None, "11.8")
    assert "upgrade the NVIDIA driver" in torch_fix("2.11.0", "11.4")


def test_driver_fine_but_no_gpu_visible():
    f = check_cuda(fake_machine(0))
    assert f.level == "FAIL" and "no CUDA GPU" in f.message and "--dry-run" in f.message


def test_more_gpus_asked_than_found():
    f = check_gpus(fake_machine(2), needs(gpus_requested=4))
    assert f.level == "FAIL" and "--gpus 4: only 2 CUDA GPU(s) found" in f.message


def test_fewer_gpus_than_the_profile_is_a_note():
    f = check_gpus(fake_machine(1), needs())
    assert f.level == "note" and "profile a5000x4 is 4 GPU(s)" in f.message


def test_free_memory_below_the_plans_peak_says_both_and_the_cheapest_fit(pod_plan):
    used = (GpuInfo(name="NVIDIA RTX A5000", total_gib=23.6, free_gib=9.0),)
    f = check_memory(fake_machine(1, gpus=used), needs(profile=PROFILES["a5000x1"], plan=pod_plan,
                                                       peak_gb=pod_plan.peak_gb_per_gpu))
    assert f.level == "FAIL"
    assert f"plan peak {pod_plan.peak_gb_per_gpu:.2f} GB per GPU but GPU 0 has 9.00 GB free" in f.message
    assert "cheapest change that fits: " in f.message and "(peak " in f.message  # from lora/estimate/estimate.py


def test_free_memory_with_no_change_that_fits(pod_plan):
    used = (GpuInfo(name="NVIDIA RTX A5000", total_gib=23.6, free_gib=1.0),)
    f = check_memory(fake_machine(1, gpus=used), needs(plan=pod_plan, peak_gb=pod_plan.peak_gb_per_gpu))
    assert f.level == "FAIL" and "no single change fits" in f.message


def test_bitsandbytes_kernels_that_do_not_load_fail_quantised_entries_only():
    broken = fake_machine(1, bnb_error="RuntimeError: CUDA Setup failed")
    f = check_bitsandbytes(broken, needs(quant_bits=4))
    assert f.level == "FAIL" and "4-bit needs bitsandbytes' CUDA kernels: RuntimeError" in f.message
    assert check_bitsandbytes(broken, needs(quant_bits=16)) is None


def test_attention_backend_and_a_flash_request_without_the_package():
    assert check_attention(fake_machine(1), needs()).message.startswith("sdpa")
    assert check_attention(fake_machine(1, flash_attn_version="2.8.3"), needs()).message == \
        "flash_attention_2 (flash-attn 2.8.3)"
    f = check_attention(fake_machine(1), needs(attention_requested="flash_attention_2"))
    assert f.level == "FAIL" and "flash-attn does not import" in f.message and "docs/pods.md" in f.message


def test_disk_too_small_gives_the_sizes():
    f = check_disk(fake_machine(1, free_disk_gb={"/root/.cache/huggingface/hub": 10.0}), needs())
    assert f.level == "FAIL" and "15.0 GB model download + 0.2 GB checkpoints, 10.0 GB free" in f.message


def test_disk_on_two_filesystems_checks_each():
    facts = fake_machine(1, free_disk_gb={"/cache": 100.0, "/out": 0.1}, same_disk=False)
    f = check_disk(facts, needs())
    assert f.level == "FAIL" and "0.2 GB for checkpoints (0.1 GB free in the output folder)" in f.message


def test_model_not_cached_offline_and_hub_unreachable():
    f = check_model(fake_machine(1, model_cached=False, hub_offline=True), needs())
    assert f.level == "FAIL" and "HF_HUB_OFFLINE" in f.message
    f = check_model(fake_machine(1, model_cached=False, hub_error="ConnectTimeout: timed out"), needs())
    assert f.level == "FAIL" and "unreachable (ConnectTimeout" in f.message
    assert check_model(fake_machine(1, model_cached=False), needs()).level == "ok"


def test_gated_model_without_a_token():
    f = check_token(fake_machine(1, model_cached=False, model_gated=True, token_present=False), needs())
    assert f.level == "FAIL" and "gated" in f.message and "huggingface-cli login" in f.message
    ok = check_token(fake_machine(1, model_cached=False, model_gated=True, token_present=True), needs())
    assert ok.level == "ok" and "hf_" not in ok.message
    assert check_token(fake_machine(1, model_cached=True, model_gated=True), needs()) is None


def test_output_folder_not_writable():
    f = check_output(fake_machine(1, output_error="PermissionError: Permission denied"), needs())
    assert f.level == "FAIL" and "cannot write in lora_adapters/pod" in f.message


def test_a_cuda_failure_skips_the_checks_that_need_a_gpu():
    findings = run_checks(fake_machine(0, torch_cuda=None, torch_version="2.13.0+cpu"), needs())
    assert [f.check for f in findings] == ["cuda", "attention", "disk", "model", "output"]
    with pytest.raises(UserError, match=r"^pre-flight cuda: torch 2.13.0\+cpu is a CPU build"):
        require(findings)


def test_needs_for_sizes_the_download_and_checkpoints(pod_plan):
    entry = load_registry(REPO / "finetune_configs.json").get("formula_llama_3_1_8b_8bits_r8")
    n = needs_for(name="x", profile=PROFILES["a5000x1"], gpus_requested=None, entry=entry, base_model="m",
                  output_dir="o", plan=pod_plan, model_cached=False)
    assert 14 < n.download_gb < 16  # 8.03B parameters in bf16
    assert n.checkpoints_gb == round(pod_plan.trainable_params * 12 * 3 / 2**30, 2)
    cached = needs_for(name="x", profile=PROFILES["a5000x1"], gpus_requested=None, entry=entry, base_model="m",
                       output_dir="o", plan=pod_plan, model_cached=True)
    assert cached.download_gb == 0


# ---------------------------------------------------------------- the real machine (this CPU box)


def test_gather_on_this_machine_reads_real_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    facts = gather(gpu=True, quant_bits=8, base_model="meta-llama/Llama-3.1-8B-Instruct", is_local=False,
                   model_cached=False, output_dir=tmp_path / "adapters" / "x")
    import torch

    assert facts.torch_version == torch.__version__ and facts.torch_cuda == torch.version.cuda
    assert facts.hub_offline and facts.hub_error is None  # offline: the hub is not called
    assert facts.output_error is None and all(v > 0 for v in facts.free_disk_gb.values())
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert gather(gpu=False, quant_bits=16, base_model="./m", is_local=True, model_cached=True,
                  output_dir=blocked / "x").output_error is not None


def test_check_on_a_gpu_entry_here_exits_2_with_the_real_reason(workspace, capsys, monkeypatch):
    """No fakes: this machine's torch has no CUDA (or no GPU), and --check says so."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=8)})
    assert finetune_main(workspace.argv("pod", "--check")) == 2
    out, err = capsys.readouterr()
    assert "FAIL  cuda:" in out and "ok    data:" in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: pre-flight cuda: ")
    import torch

    reason = "CPU build" if torch.version.cuda is None else "no CUDA GPU" if not torch.cuda.is_available() else None
    if reason:
        assert reason in err
    assert workspace.written() == []


def test_check_on_a_cpu_entry_passes(workspace, capsys):
    workspace.write({"cpu": cpu_entry()})
    assert finetune_main(workspace.argv("cpu", "--check")) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "ok    output:" in out and "cuda" not in out


# ---------------------------------------------------------------- every GPU launch runs it first


def test_gpu_launch_refused_by_the_preflight_launches_nothing(workspace, fake_child, capsys, monkeypatch):
    full = (GpuInfo(name="NVIDIA RTX A5000", total_gib=23.6, free_gib=2.0),) * 4
    monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(4, gpus=full))
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=8)})
    assert finetune_main(workspace.argv("pod")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: pre-flight memory: plan peak")
    assert fake_child.calls == [] and workspace.written() == []


def test_gpu_launch_adds_flash_attn_and_env_trackers_never_their_values(workspace, fake_child, capsys, monkeypatch):
    monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(4, flash_attn_version="2.8.3"))
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    monkeypatch.setenv("WANDB_API_KEY", "wandb_secret_value_123")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:pw_secret@mlflow.example")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=8)})
    finetune_main(workspace.argv("pod"))
    (call,) = fake_child.calls
    argv = call["argv"]
    assert argv[argv.index("--attn_implementation") + 1] == "flash_attention_2"
    assert argv[argv.index("--use_wandb") + 1] == "true" and argv[argv.index("--use_mlflow") + 1] == "true"
    assert call["env"]["TENSORBOARD_LOGGING_DIR"] == str((workspace.adapters / "pod" / "tensorboard").absolute())
    run_json = (workspace.adapters / "pod" / "run.json").read_text()
    recipe = (workspace.recipes / "pod.yaml").read_text()
    for secret in ("my-project", "wandb_secret_value_123", "pw_secret"):
        assert secret not in run_json and secret not in recipe and secret not in " ".join(argv)
    assert json.loads(run_json)["tensorboard_dir"] == "tensorboard"  # portable: beside run.json
    assert "attn_implementation: sdpa" in recipe and "use_tensorboard: true" in recipe


def test_entry_trackers_render_into_the_recipe(workspace, fake_child, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=8, trackers=["wandb"], attention="sdpa")})
    finetune_main(workspace.argv("pod"))
    argv = fake_child.calls[0]["argv"]
    assert "--use_wandb" not in argv and "--attn_implementation" not in argv  # the recipe already says so
    recipe = (workspace.recipes / "pod.yaml").read_text()
    assert "use_wandb: true" in recipe and "use_mlflow: false" in recipe
