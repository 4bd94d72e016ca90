"""The plan as text and JSON (lora/estimate/output.py).

    .venv/bin/python -m pytest tests/estimate/test_output.py -q
"""
from __future__ import annotations

import json

import pytest

from lora.core.files import REPO_ROOT
from lora.estimate import estimate, format_plan, load_arch, plan_to_json
from lora.estimate.schedule import checkpoint_interval_steps
from tests.estimate.test_helpers import arch_8b, axolotl_inputs


@pytest.fixture(scope="module")
def llama8b():
    return arch_8b()


def test_json_has_the_keys_scripts_read(llama8b):
    j = plan_to_json(estimate(axolotl_inputs(), llama8b))
    for key in ("peak_gb_per_gpu", "steps", "hours", "cost_usd", "fits", "parts", "assumptions", "suggestion"):
        assert key in j
    assert j["assumptions"]["utilisation"] == 0.35
    json.dumps(j)  # serialisable as is


def test_format_plan_says_does_not_fit_with_the_change(llama8b):
    a70 = load_arch("meta-llama/Llama-3.1-70B-Instruct", REPO_ROOT)
    text = format_plan(estimate(axolotl_inputs(base_model="meta-llama/Llama-3.1-70B-Instruct"), a70))
    assert "DOES NOT FIT" in text and "cheapest change that fits" in text
    assert "fits: yes" in format_plan(estimate(axolotl_inputs(quant_bits=4), llama8b))


def test_time_line_names_checkpoints_only_as_often_as_they_happen(llama8b):
    short = estimate(axolotl_inputs(dataset_rows=200, dataset_tokens=200 * 70), llama8b)
    long = estimate(axolotl_inputs(profile="a5000x1", dataset_rows=200_000, dataset_tokens=200_000 * 700), llama8b)
    assert short.seconds < 30 * 60 < long.seconds
    (short_time,) = [line for line in format_plan(short).splitlines() if line.startswith("  time:")]
    assert "one checkpoint, at the end" in short_time and "~30 min" not in short_time
    assert "0.00 h" not in format_plan(short)
    (long_time,) = [line for line in format_plan(long).splitlines() if line.startswith("  time:")]
    assert f"checkpoint every {checkpoint_interval_steps(long)} steps (~30 min)" in long_time
    assert checkpoint_interval_steps(long) < long.steps
