"""Shared inputs for the tests/test_plan_*.py modules (no tests here): Llama-3.1-8B's facts from the
shipped table and an axolotl recipe on a hardware profile."""
from __future__ import annotations

from functools import lru_cache

from lora.fsutil import REPO_ROOT
from lora.plan import ModelArch, PlanInputs, inputs_from_profile, load_arch
from lora.profiles import PROFILES

LLAMA8B = "meta-llama/Llama-3.1-8B-Instruct"
BUNDLED = REPO_ROOT / "models" / "base_model" / "smollm2-135m-instruct"


@lru_cache(maxsize=None)
def arch_8b() -> ModelArch:
    return load_arch(LLAMA8B, REPO_ROOT)


def axolotl_inputs(profile="a5000x4", **kw) -> PlanInputs:
    base = dict(base_model=LLAMA8B, lora_r=16, micro_batch_size=2, gradient_accumulation_steps=4,
                sequence_len=2048, dataset_rows=3628, dataset_tokens=3628 * 70)
    base.update(kw)
    return inputs_from_profile(PROFILES[profile], **base)
