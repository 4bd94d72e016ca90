"""plan_for_entry (lora/estimate/for_entry.py): a registry entry -> its plan, as the CLI's --plan prints it.

    .venv/bin/python -m pytest tests/estimate/test_for_entry.py -q
"""
from __future__ import annotations

import json
import math

import pytest

from lora.core.errors import UserError
from lora.core.files import REPO_ROOT
from lora.estimate import (
    MissingFacts,
    count_tokens,
    estimate,
    format_plan,
    inputs_from_profile,
    plan_for_entry,
    plan_to_json,
)
from lora.recipe.profiles import PROFILES
from lora.recipe.registry import load_registry
from tests.conftest import FPB_TRAIN
from tests.estimate.test_helpers import LLAMA8B, arch_8b, write_tiny_llama

pytestmark = pytest.mark.skipif(not FPB_TRAIN.is_file(), reason="data/train/fpb_train.jsonl not prepared")


def _registry(tmp_path, **entry):
    fields = dict(base_model=LLAMA8B, dataset_path=str(FPB_TRAIN), lora_r=8, quant_bits=8, learning_rate=1e-4,
                  batch_size=4, gradient_accumulation_steps=2, num_epochs=2, sequence_len=1024,
                  target_modules=["q_proj", "v_proj"], profile="a5000x4", defaults="tuned")
    fields.update(entry)
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({"x": fields}))
    reg = load_registry(path)
    return reg, reg.get("x")


def test_entry_fields_and_profile_flow_into_the_plan(tmp_path):
    reg, entry = _registry(tmp_path)
    plan = plan_for_entry(reg, entry, num_gpus=2, num_machines=3)
    i = plan.inputs
    assert (i.base_model, i.quant_bits, i.lora_r, i.target_modules) == (LLAMA8B, 8, 8, ["q_proj", "v_proj"])
    assert (i.micro_batch_size, i.gradient_accumulation_steps, i.sequence_len, i.num_epochs) == (4, 2, 1024, 2)
    assert (i.num_gpus, i.num_machines, plan.world_size) == (2, 3, 6)
    assert i.zero_stage == 2 and i.sample_packing is True  # the a5000x4 profile's defaults
    assert i.usd_per_gpu_hour == 0.26 and i.dataset_rows == 3628
    assert plan.cost_usd == pytest.approx(plan.hours * 6 * 0.26, abs=0.01)


def test_same_plan_as_the_steps_done_by_hand(tmp_path):
    reg, entry = _registry(tmp_path, sample_packing=False, zero_stage=1)
    tokens = count_tokens(FPB_TRAIN, LLAMA8B, REPO_ROOT)
    by_hand = estimate(inputs_from_profile(
        PROFILES["a5000x4"], tokens=tokens, base_model=LLAMA8B, quant_bits=8, lora_r=8,
        target_modules=["q_proj", "v_proj"], use_dora=False, lora_dropout=0.05, micro_batch_size=4,
        gradient_accumulation_steps=2, sequence_len=1024, num_epochs=2, max_steps=None, sample_packing=False,
        zero_stage=1, num_gpus=4, num_machines=1), arch_8b())
    plan = plan_for_entry(reg, entry, num_gpus=4)
    assert plan.inputs.padding_factor is not None and plan.inputs.padding_factor > 1
    assert format_plan(plan) == format_plan(by_hand)


def test_price_override_and_at_least_one_gpu(tmp_path):
    reg, entry = _registry(tmp_path)
    plan = plan_for_entry(reg, entry, num_gpus=0, usd_per_gpu_hour=2.5)
    assert plan.inputs.num_gpus == 1 and plan.inputs.usd_per_gpu_hour == 2.5
    assert plan.cost_usd == pytest.approx(plan.hours * 2.5, abs=0.01)


def test_cpu_entry_plans_a_16bit_base_in_fp32_and_keeps_4bit(tmp_path):
    reg, entry = _registry(tmp_path, profile="cpu", quant_bits=16)
    assert plan_for_entry(reg, entry, num_gpus=1).inputs.quant_bits == 32
    reg, entry = _registry(tmp_path, profile="cpu", quant_bits=4)
    plan = plan_for_entry(reg, entry, num_gpus=2)
    assert plan.inputs.quant_bits == 4 and plan.inputs.accelerator == "cpu" and plan.hours is None


def test_missing_dataset_is_one_line_user_error(tmp_path):
    reg, entry = _registry(tmp_path, dataset_path="no/such.jsonl")
    with pytest.raises(UserError) as err:
        plan_for_entry(reg, entry, num_gpus=1)
    msg = str(err.value)
    assert "--plan needs the dataset" in msg and "such.jsonl is missing" in msg and "\n" not in msg


def test_unknown_model_raises_missing_facts(tmp_path):
    reg, entry = _registry(tmp_path, base_model="someone/unknown-model-7b")
    with pytest.raises(MissingFacts, match="someone/unknown-model-7b"):
        plan_for_entry(reg, entry, num_gpus=1)


def test_relative_local_base_model_resolves_against_the_registry_folder(tmp_path):
    folder = write_tiny_llama(tmp_path / "tiny")
    reg, entry = _registry(tmp_path, base_model="./tiny")
    plan = plan_for_entry(reg, entry, num_gpus=1)
    assert plan.inputs.base_model == str(folder) and plan.arch.hidden_size == 64


def test_module_the_model_lacks_is_a_one_line_user_error(tmp_path):
    reg, entry = _registry(tmp_path, target_modules=["nonexistent_proj"])
    with pytest.raises(UserError) as err:
        plan_for_entry(reg, entry, num_gpus=1)
    msg = str(err.value)
    assert "nonexistent_proj" in msg and "q_proj, k_proj, v_proj" in msg and "\n" not in msg


@pytest.mark.parametrize("price", [float("nan"), float("inf"), -1.0])
def test_bad_price_is_a_one_line_user_error(tmp_path, price):
    reg, entry = _registry(tmp_path)
    with pytest.raises(UserError) as err:
        plan_for_entry(reg, entry, num_gpus=1, usd_per_gpu_hour=price)
    assert "usd_per_gpu_hour" in str(err.value) and "\n" not in str(err.value)


def test_huge_recipe_values_plan_in_finite_numbers(tmp_path):
    # the registry's largest values (lora/recipe/registry.py bounds them; the planner must survive them)
    reg, entry = _registry(tmp_path, num_epochs=1000, batch_size=4096, gradient_accumulation_steps=65536,
                           sequence_len=131072, sample_packing=False)
    plan = plan_for_entry(reg, entry, num_gpus=4, usd_per_gpu_hour=1e300)
    assert json.loads(json.dumps(plan_to_json(plan), allow_nan=False))["steps"] == 1
    assert math.isfinite(plan.cost_usd) and math.isfinite(plan.peak_gb_per_gpu)


def test_overflowing_price_is_a_one_line_user_error(tmp_path):
    reg, entry = _registry(tmp_path, num_epochs=1000)
    with pytest.raises(UserError) as err:
        plan_for_entry(reg, entry, num_gpus=4, usd_per_gpu_hour=1e308)
    assert "overflows" in str(err.value) and "\n" not in str(err.value)


def test_a_finlora_entry_plans_what_it_renders(tmp_path):
    """Without `defaults`, the plan reads the same resolved values as the recipe: FinLoRA's ZeRO-1, no packing."""
    reg, entry = _registry(tmp_path, defaults="finlora", target_modules=None)
    i = plan_for_entry(reg, entry, num_gpus=4).inputs
    assert (i.zero_stage, i.sample_packing, sorted(i.target_modules)) == (1, False, ["k_proj", "q_proj", "v_proj"])
