"""PlanInputs and inputs_from_profile (lora/estimate/inputs.py).

    .venv/bin/python -m pytest tests/estimate/test_inputs.py -q
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from lora.core.errors import UserError
from lora.estimate import PlanInputs, inputs_from_profile
from lora.recipe.profiles import PROFILES
from tests.estimate.test_helpers import axolotl_inputs


def test_profile_fields_flow_into_inputs():
    i = axolotl_inputs()
    assert (i.num_gpus, i.gpu_memory_gb, i.gpu_tflops, i.usd_per_gpu_hour, i.zero_stage) == (4, 24.0, 111.1, 0.26, 2)
    assert i.attention == "sdpa" and i.gradient_checkpointing and i.sample_packing
    assert axolotl_inputs(quant_bits=4).optimizer_8bit is True and i.optimizer_8bit is False


def _fields(**kw) -> dict:
    return dict(base_model="m", lora_r=8, micro_batch_size=2, sequence_len=2048, dataset_rows=10,
                dataset_tokens=1000) | kw


@pytest.mark.parametrize("price", [float("nan"), float("inf"), float("-inf"), -0.01])
def test_price_must_be_finite_and_not_negative(price):
    with pytest.raises(ValidationError, match="usd_per_gpu_hour"):
        PlanInputs(**_fields(usd_per_gpu_hour=price))
    with pytest.raises(UserError) as err:
        inputs_from_profile(PROFILES["a5000x4"], **_fields(usd_per_gpu_hour=price))
    msg = str(err.value)
    assert msg.startswith("cannot plan: usd_per_gpu_hour") and repr(price) in msg and "\n" not in msg


def test_free_hardware_is_a_price():
    assert PlanInputs(**_fields(usd_per_gpu_hour=0.0)).usd_per_gpu_hour == 0.0


@pytest.mark.parametrize("field, value", [
    ("num_epochs", float("inf")), ("num_epochs", float("nan")), ("max_steps", 0), ("max_steps", -5),
    pytest.param("max_steps", 10**400, id="max_steps-10**400"),
    pytest.param("micro_batch_size", 10**400, id="micro_batch_size-10**400"), ("sequence_len", 10**16), ("gpu_tflops", -1.0),
    ("gpu_memory_gb", 0.0), ("lora_dropout", 1.5), ("target_modules", []), ("target_modules", " , "),
])
def test_absurd_inputs_are_one_line_errors_naming_the_field(field, value):
    with pytest.raises(UserError) as err:
        inputs_from_profile(PROFILES["a5000x4"], **_fields(**{field: value}))
    msg = str(err.value)
    assert msg.startswith(f"cannot plan: {field} ") and "\n" not in msg and len(msg) < 300


def test_validation_error_of_several_fields_is_still_one_line():
    with pytest.raises(UserError) as err:
        inputs_from_profile(PROFILES["a5000x4"], **_fields(usd_per_gpu_hour=float("nan"), max_steps=0, lora_r=-1))
    msg = str(err.value)
    assert "usd_per_gpu_hour" in msg and "max_steps" in msg and "lora_r" in msg and "\n" not in msg
