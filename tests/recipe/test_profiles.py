"""lora/recipe/profiles.py: the rented-GPU profiles, `--profile NAME`, `--profile auto`, the attention choice.

    .venv/bin/python -m pytest tests/recipe/test_profiles.py -q
"""
from __future__ import annotations

import json
import re

import pytest

from lora.cli.shims import finetune_main
from lora.core.errors import UserError
from lora.recipe.profiles import (
    AUTO,
    PROFILES,
    GpuInfo,
    attention_for,
    known_gpu,
    profile_from_gpus,
    profile_named,
)
from lora.recipe.registry import load_registry
from lora.train.launch import LaunchRequest, decide, entry_for
from tests.conftest import REPO, cpu_entry

FORMULA = str(REPO / "data" / "train" / "formula_train.jsonl")
# name: (GPUs, GB per GPU, dense bf16 TFLOPS from NVIDIA's datasheet)
RENTED = {
    "rtx4090x1": (1, 24, 165.2), "rtx4090x2": (2, 24, 165.2), "a6000x1": (1, 48, 154.8), "a6000x2": (2, 48, 154.8),
    "l40sx1": (1, 48, 362.05), "l40sx4": (4, 48, 362.05), "a100-40x1": (1, 40, 312), "a100-40x8": (8, 40, 312),
    "a100-80x1": (1, 80, 312), "a100-80x8": (8, 80, 312), "h100x1": (1, 80, 989.4), "h100x8": (8, 80, 989.4),
}


@pytest.fixture
def no_auto():
    yield
    PROFILES.pop(AUTO, None)  # --profile auto registers itself for the process; tests must not leak it


@pytest.mark.parametrize("name", sorted(RENTED))
def test_rented_profiles_are_named_sized_and_priced(name):
    p = PROFILES[name]
    gpus, memory, tflops = RENTED[name]
    assert (p.num_gpus, p.gpu_memory_gb, p.gpu_bf16_tflops) == (gpus, memory, tflops)
    assert re.fullmatch(r"[a-z0-9]+(-\d+)?x\d+", name) and name.endswith(f"x{gpus}")
    assert p.accelerator == "cuda" and p.bf16 and p.usd_per_gpu_hour > 0
    assert p.attn_implementation == "sdpa"  # no flash-attn compile by default
    assert p.default_zero_stage == (2 if gpus > 1 else None)


def test_every_gpu_profile_defaults_to_sdpa():
    assert {p.attn_implementation for p in PROFILES.values()} == {"sdpa"}


@pytest.mark.parametrize(
    "accelerator, requested, importable, expected",
    [
        ("a5000x4", None, False, "sdpa"),
        ("a5000x4", None, True, "flash_attention_2"),  # the package is there: it skips packed rows' cross blocks
        ("a5000x4", "sdpa", True, "sdpa"),  # the entry's word wins
        ("a5000x4", "flash_attention_2", False, "flash_attention_2"),  # the pre-flight refuses this one
        ("cpu", None, True, "sdpa"),  # flash-attn is CUDA-only
    ],
)
def test_attention_for(accelerator, requested, importable, expected):
    assert attention_for(PROFILES[accelerator], requested, importable) == expected


@pytest.mark.parametrize(
    "name, gib, expected",
    [("NVIDIA A100-SXM4-80GB", 79.2, "a100-80x1"), ("NVIDIA A100-PCIE-40GB", 39.4, "a100-40x1"),
     ("NVIDIA GeForce RTX 4090", 23.6, "rtx4090x1"), ("NVIDIA H100 80GB HBM3", 79.1, "h100x1"),
     ("NVIDIA RTX A6000", 47.5, "a6000x1"), ("NVIDIA L40S", 44.4, "l40sx1"), ("Tesla T4", 14.6, None)],
)
def test_known_gpu_matches_torch_names(name, gib, expected):
    found = known_gpu(GpuInfo(name=name, total_gib=gib))
    assert (found.name if found else None) == expected


def test_profile_from_gpus_uses_the_facts():
    p = profile_from_gpus(tuple(GpuInfo(name="NVIDIA A100-SXM4-80GB", total_gib=79.2, free_gib=78.0)
                                for _ in range(2)))
    assert (p.name, p.num_gpus, p.gpu_memory_gb, p.bf16, p.default_zero_stage) == (AUTO, 2, 79.2, True, 2)
    assert (p.gpu_bf16_tflops, p.usd_per_gpu_hour) == (312.0, PROFILES["a100-80x1"].usd_per_gpu_hour)
    unknown = profile_from_gpus((GpuInfo(name="Tesla T4", total_gib=14.6, bf16=False),))
    assert unknown.gpu_bf16_tflops is None and unknown.usd_per_gpu_hour is None and unknown.bf16 is False


def test_profile_from_gpus_refuses_no_gpu_and_mixed_gpus():
    with pytest.raises(UserError, match="no CUDA GPU; train a cpu entry such as sentiment_smollm2_cpu"):
        profile_from_gpus(())
    with pytest.raises(UserError, match="mixes GPUs"):
        profile_from_gpus((GpuInfo(name="NVIDIA L40S", total_gib=44.4), GpuInfo(name="NVIDIA A10", total_gib=22)))


def test_unknown_profile_names_close_matches_and_the_list():
    with pytest.raises(UserError) as err:
        profile_named("h100x4")
    text = str(err.value)
    assert "did you mean 'h100x8' or 'h100x1'" in text and "known: a5000x4" in text and "docs/pods.md" in text


# ---------------------------------------------------------------- through the CLI


def test_profile_flag_plans_an_entry_on_another_profile(workspace, capsys):
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=8)})
    before = workspace.registry.read_text()
    assert finetune_main(workspace.argv("pod", "--plan", "--json", "--profile", "h100x1")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["gpu_memory_gb"], plan["world_size"]) == (80, 1)
    assert workspace.registry.read_text() == before  # the entry is not edited


def test_profile_flag_dry_run_renders_the_other_profile(workspace, capsys, monkeypatch):
    monkeypatch.setattr("lora.cli.verbs.train.validate_with_axolotl", lambda *a: None)
    workspace.write({"pod": cpu_entry(profile="a5000x4", defaults="tuned")})
    assert finetune_main(workspace.argv("pod", "--dry-run", "--profile", "a100-80x8")) == 0
    text = (workspace.recipes / "pod.yaml").read_text()
    assert "8x A100 80 GB (Ampere), SXM4" in text and "--num_processes 8" in capsys.readouterr().out


def test_unknown_profile_flag_is_one_line_exit_2(workspace, capsys):
    workspace.write({"pod": cpu_entry()})
    assert finetune_main(workspace.argv("pod", "--plan", "--profile", "a6000x3")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'a6000x2' or 'a6000x1'" in err and "known:" in err


def test_profile_auto_without_gpus_exits_2_and_suggests_a_cpu_entry(workspace, capsys, monkeypatch, no_auto):
    monkeypatch.setattr("lora.cli.options.gather_gpus", lambda: ())
    workspace.write({"pod": cpu_entry()})
    assert finetune_main(workspace.argv("pod", "--plan", "--profile", "auto")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err and "sentiment_smollm2_cpu" in err


def test_profile_auto_plans_on_this_machines_gpus(workspace, capsys, monkeypatch, no_auto):
    monkeypatch.setattr("lora.cli.options.gather_gpus", lambda: (GpuInfo(name="NVIDIA GeForce RTX 4090", total_gib=23.6),) * 2)
    workspace.write({"pod": cpu_entry(base_model="meta-llama/Llama-3.1-8B-Instruct", dataset_path=FORMULA,
                                      profile="a5000x4", quant_bits=4)})
    assert finetune_main(workspace.argv("pod", "--plan", "--json", "--profile", "auto")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["world_size"], plan["gpu_memory_gb"]) == (2, 23.6)
    assert PROFILES[AUTO].gpu_bf16_tflops == 165.2  # the RTX 4090's, matched by name


def test_profile_override_is_decided_in_entry_for(workspace):
    workspace.write({"pod": cpu_entry(profile="a5000x4", defaults="tuned")})
    registry = load_registry(workspace.registry)
    req = LaunchRequest(name="pod", profile="l40sx4", dry_run=True, recipes_dir=workspace.recipes,
                        adapters_dir=workspace.adapters)
    entry = entry_for(registry, req)
    assert entry.profile == "l40sx4" and registry.get("pod").profile == "a5000x4"
    from lora.train.launch import Facts

    plan = decide(req, registry, entry, Facts(workers=4, environ={}, offline=True))
    assert plan.profile.name == "l40sx4" and "attn_implementation: sdpa" in plan.recipe_text
