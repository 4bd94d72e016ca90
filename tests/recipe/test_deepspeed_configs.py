"""templates/deepspeed/zero{1,2,3}.json through DeepSpeed's own config parser, "auto" filled as the Trainer fills it.

    python -m pytest tests/recipe/test_deepspeed_configs.py -q

ZeRO-2 and ZeRO-3 also run for real on two CPU processes (tests/train/test_train_integration.py, slow);
this checks every stage's file the way a pod's DeepSpeed will read it, with bf16 as on an A5000.
"""
from __future__ import annotations

import json

import pytest

from lora.recipe.render import deepspeed_config_path

HIDDEN = 4096  # Llama-3.1-8B: the Trainer sizes ZeRO-3's buckets from the model's hidden size


def fill_auto(config: dict, *, micro: int, accum: int, world: int, bf16: bool) -> dict:
    """transformers' HfTrainerDeepSpeedConfig rules for the keys our files leave on "auto"."""
    filled = json.loads(json.dumps(config))
    values = {
        "train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world, "gradient_clipping": 1.0,
    }
    for key, value in values.items():
        if filled.get(key) == "auto":
            filled[key] = value
    filled["bf16"]["enabled"] = bf16
    filled["fp16"]["enabled"] = False
    zero = filled["zero_optimization"]
    for key, value in {"reduce_bucket_size": HIDDEN * HIDDEN, "stage3_prefetch_bucket_size": int(0.9 * HIDDEN * HIDDEN),
                       "stage3_param_persistence_threshold": 10 * HIDDEN}.items():
        if zero.get(key) == "auto":
            zero[key] = value
    assert '"auto"' not in json.dumps(filled), "a key the Trainer does not fill is left on auto"
    return filled


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_parses_each_stage(stage):
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = json.loads(deepspeed_config_path(stage).read_text())
    parsed = DeepSpeedConfig(fill_auto(raw, micro=4, accum=2, world=1, bf16=True))
    assert parsed.zero_optimization_stage == stage
    assert parsed.zero_enabled and parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.train_batch_size == 8 and parsed.train_micro_batch_size_per_gpu == 4
    assert parsed.gradient_accumulation_steps == 2
    if stage == 3:  # the adapter must be saved whole, not as rank shards
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_deepspeed_refuses_a_wrong_batch_product():
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = fill_auto(json.loads(deepspeed_config_path(2).read_text()), micro=4, accum=2, world=1, bf16=True)
    raw["train_batch_size"] = 7  # what a world size the Trainer got wrong produces (see lora/train/axolotl_cpu_ranks.py)
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        DeepSpeedConfig(raw)
