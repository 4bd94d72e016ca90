"""benchmarks/flops.py: useful generation FLOPs against a hand computation on the bundled model's numbers.

    .venv/bin/python -m pytest tests/benchmarks/test_flops.py -q
"""
from __future__ import annotations

import pytest

from benchmarks.flops import generation_flops, total_generation_flops
from lora.estimate.facts import arch_from_config

# SmolLM2-135M-Instruct's config.json (models/base_model/smollm2-135m-instruct), the numbers the hand count uses
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True,
           "model_type": "llama"}


def test_one_row_matches_the_hand_count():
    arch = arch_from_config(SMOLLM2)
    # per layer: q 576·576 + k 576·192 + v 576·192 + o 576·576 + gate/up 2·576·1536 + down 1536·576 = 3,538,944
    assert arch.linear_params == 30 * 3_538_944 == 106_168_320
    # 10 prompt tokens, 2 answer tokens: 12 tokens through the linears, 2 through lm_head, positions 1..12
    linears = 2 * 106_168_320 * 12  # 2,548,039,680
    lm_head = 2 * 49152 * 576 * 2  # 113,246,208
    attention = 4 * 30 * 576 * 78  # 1+…+12 = 78 keys: 5,391,360
    assert generation_flops(arch, 10, 2) == linears + lm_head + attention == 2_666_677_248


def test_padding_free_definition_is_additive_and_prompt_only_rows_have_no_lm_head():
    arch = arch_from_config(SMOLLM2)
    assert generation_flops(arch, 5, 0) == 2 * 106_168_320 * 5 + 4 * 30 * 576 * 15
    assert total_generation_flops(arch, [(10, 2), (5, 0)]) == generation_flops(arch, 10, 2) + generation_flops(arch, 5, 0)
    assert total_generation_flops(arch, []) == 0


def test_negative_counts_are_refused():
    with pytest.raises(ValueError):
        generation_flops(arch_from_config(SMOLLM2), -1, 0)
