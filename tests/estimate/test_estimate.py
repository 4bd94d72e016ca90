"""The estimate (lora/estimate/estimate.py): fits or not, the confirmed cheapest change, CPU plans.

    .venv/bin/python -m pytest tests/estimate/test_estimate.py -q
"""
from __future__ import annotations

import pytest

from lora.core.files import REPO_ROOT
from lora.estimate import PlanInputs, checkpoint_interval_steps, estimate, format_plan, inputs_from_profile, load_arch
from lora.recipe.profiles import PROFILES
from tests.estimate.test_helpers import arch_8b, axolotl_inputs


@pytest.fixture(scope="module")
def llama8b():
    return arch_8b()


def test_70b_does_not_fit_and_the_suggestion_is_confirmed(llama8b):
    a70 = load_arch("meta-llama/Llama-3.1-70B-Instruct", REPO_ROOT)
    i = axolotl_inputs(base_model="meta-llama/Llama-3.1-70B-Instruct")
    plan = estimate(i, a70)
    assert plan.fits is False and "base_weights" in plan.overflow
    s = plan.suggestion
    assert s is not None and s.peak_gb_per_gpu <= 24
    again = estimate(PlanInputs(**(i.model_dump() | s.overrides)), a70)
    assert again.fits is True


def test_smaller_micro_batch_is_tried_first(llama8b):
    plan = estimate(axolotl_inputs(profile="a5000x1", micro_batch_size=16, sequence_len=4096), llama8b)
    assert plan.fits is False and plan.suggestion.change.startswith("micro_batch_size")
    assert plan.suggestion.overrides["micro_batch_size"] * plan.suggestion.overrides["gradient_accumulation_steps"] >= 16


def test_cpu_profile_plans_without_gpu_figures():
    smol = load_arch("models/base_model/smollm2-135m-instruct", REPO_ROOT)  # config.json or the table
    i = inputs_from_profile(PROFILES["cpu"], base_model="models/base_model/smollm2-135m-instruct", lora_r=8,
                            micro_batch_size=2, sequence_len=512, dataset_rows=100, dataset_tokens=10_000)
    p = estimate(i, smol)
    assert i.quant_bits == 32 and p.fits is None and p.hours is None and p.cost_usd is None
    assert p.parts["base_weights"] == pytest.approx(134.5e6 * 4 / 2**30, rel=0.01)
    assert checkpoint_interval_steps(p) >= 1
    assert "not estimated" in format_plan(p)
