"""Shared inputs for the tests/test_plan_*.py modules (no tests here): Llama-3.1-8B's facts from the
shipped table and an axolotl recipe on a hardware profile."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from lora.core.files import REPO_ROOT
from lora.estimate import ModelArch, PlanInputs, inputs_from_profile, load_arch
from lora.recipe.profiles import PROFILES

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


def write_tiny_llama(folder: Path) -> Path:
    """A two-layer Llama config.json (hidden 64): a local model folder the planner can read."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}))
    return folder
