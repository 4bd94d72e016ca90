"""PlanInputs and inputs_from_profile (lora/plan/inputs.py).

    .venv/bin/python -m pytest tests/test_plan_inputs.py -q
"""
from __future__ import annotations

from tests.test_plan_helpers import axolotl_inputs


def test_profile_fields_flow_into_inputs():
    i = axolotl_inputs()
    assert (i.num_gpus, i.gpu_memory_gb, i.gpu_tflops, i.usd_per_gpu_hour, i.zero_stage) == (4, 24.0, 111.1, 0.26, 2)
    assert i.attention == "flash" and i.gradient_checkpointing and i.sample_packing
    assert axolotl_inputs(quant_bits=4).optimizer_8bit is True and i.optimizer_8bit is False
