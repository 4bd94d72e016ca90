"""eval/generation.py's shared-prefix reuse: greedy outputs are identical with and without it, on FPB and NER
prompts, batch sizes 1 and 8, the base and the base with an adapter attached.

    .venv/bin/python -m pytest tests/eval/test_prefix_cache.py -q              # a tiny random Llama, seconds
    .venv/bin/python -m pytest tests/eval/test_prefix_cache.py -q -m slow      # the bundled SmolLM2-135M

The tiny model uses the bundled tokenizer, so the prompts, their shared token prefix and the padding are
the real ones; only the weights are random (and a random model's near-tied logits make it a strict test).
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from eval.engine import AdapterHost, Loaded, load_base  # noqa: E402
from eval.generation import generate, shared_prefix_length  # noqa: E402
from lora.core.prompts import PROMPT_FORMATS, apply  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TASKS = ("fpb", "ner")


def prompts_of(task: str, n: int) -> list[str]:
    with open(REPO / "data" / "test" / f"{task}_test.jsonl", encoding="utf-8") as f:
        return [apply(PROMPT_FORMATS["chatml"], json.loads(next(f))["context"]) for _ in range(n)]


@pytest.mark.parametrize("encoded,expected", [
    ([[1, 2, 3, 4], [1, 2, 3, 5]], 3),
    ([[1, 2, 3], [1, 2, 3, 4]], 2),  # a prompt equal to the prefix keeps one token of its own
    ([[1, 2, 3], [1, 2, 3]], 2),
    ([[9, 2], [1, 2]], 0),
    ([[1, 2, 3]], 0),  # one prompt: nothing is shared
    ([], 0),
])
def test_shared_prefix_length(encoded, expected):
    assert shared_prefix_length(encoded) == expected


def test_the_shared_prefix_is_counted_in_tokens_not_text():
    """The prompts' common TEXT may end inside a token; only tokens every prompt has are shared."""
    from transformers import AutoTokenizer

    from lora.core.base_model import BUNDLED_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR, local_files_only=True)
    prompts = ["Say: abc", "Say: abd", "Say: ab"]
    encoded = [tok(p)["input_ids"] for p in prompts]
    n = shared_prefix_length(encoded)
    assert all(e[:n] == encoded[0][:n] for e in encoded)
    assert tok.decode(encoded[0][:n]) in "Say: ab"


def _generate_both(model, tokenizer, prompts, batch_size, new_tokens, stats=None):
    off, _ = generate(model, tokenizer, prompts, new_tokens, True, batch_size, prefix_cache=False)
    on, s = generate(model, tokenizer, prompts, new_tokens, True, batch_size, prefix_cache=True)
    if stats is not None:
        stats.append(s)
    return off, on


def _check_equal(host, tokenizer, adapter, rows, new_tokens=10):
    for task in TASKS:
        prompts = prompts_of(task, rows)
        for batch_size in (1, 8):
            model, ctx = host.model_for(adapter)
            stats = []
            with ctx:
                off, on = _generate_both(model, tokenizer, prompts, batch_size, new_tokens, stats)
            assert stats[0].shared_prefix_tokens >= 4, (task, stats[0])  # the reuse really happened (ner: 5 tokens)
            assert on == off, (task, batch_size, adapter, [(a, b) for a, b in zip(off, on, strict=True) if a != b][:3])


# ---------------------------------------------------------------- fast: a tiny random Llama, the real tokenizer


@pytest.fixture(scope="module")
def tiny_host(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lora.core.base_model import BUNDLED_MODEL_DIR, ensure_base_model

    ensure_base_model(quiet=True)
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR, local_files_only=True)
    root = tmp_path_factory.mktemp("tiny_prefix")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    base = LlamaForCausalLM(config).eval()
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs
    adapter = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                  init_lora_weights=False))
    adapter.save_pretrained(root / "adapter")
    host = AdapterHost(Loaded(base, tokenizer, torch.device("cpu"), "float32", 0.0))
    return host, tokenizer, root / "adapter"


def test_tiny_model_outputs_are_identical_with_and_without_reuse(tiny_host):
    host, tokenizer, adapter = tiny_host
    _check_equal(host, tokenizer, None, rows=10, new_tokens=6)  # 10 rows: batch 8 is two batches
    host.attach("a", str(adapter))
    try:
        model, _ = host.model_for("a")
        with_adapter, _ = generate(model, tokenizer, prompts_of("fpb", 4), 10, True, 4, prefix_cache=False)
        base_model, ctx = host.model_for(None)
        with ctx:
            without, _ = generate(base_model, tokenizer, prompts_of("fpb", 4), 10, True, 4, prefix_cache=False)
        assert with_adapter != without  # the adapter is not a no-op, so the comparison below tests it
        _check_equal(host, tokenizer, "a", rows=10, new_tokens=6)
    finally:
        host.detach("a")


def test_no_reuse_for_a_single_prompt_or_a_streamer(tiny_host):
    host, tokenizer, _ = tiny_host
    _, stats = generate(host.loaded.model, tokenizer, prompts_of("fpb", 1), 4, True, 1, prefix_cache=True)
    assert stats.shared_prefix_tokens == 0 and stats.prompt_tokens > 0


# ---------------------------------------------------------------- slow: the bundled model, fp32 and bf16


@pytest.fixture(scope="module")
def bundled_adapter(tmp_path_factory):
    """A throwaway LoRA for the bundled model (random B, so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lora.core.base_model import ensure_base_model

    path = ensure_base_model(quiet=True)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.mul_(0.02)  # a small change: the adapter shifts some answers without producing noise
    out = tmp_path_factory.mktemp("bundled_adapter") / "adapter"
    peft_model.save_pretrained(out)
    return str(path), out


def test_auto_reuses_only_for_fp32_models(tiny_host):
    host, tokenizer, _ = tiny_host
    prompts = prompts_of("fpb", 3)
    _, fp32 = generate(host.loaded.model, tokenizer, prompts, 2, True, 3)
    assert fp32.shared_prefix_tokens > 0
    host.loaded.model.to(torch.bfloat16)
    try:
        _, bf16 = generate(host.loaded.model, tokenizer, prompts, 2, True, 3)
        _, forced = generate(host.loaded.model, tokenizer, prompts, 2, True, 3, prefix_cache=True)
    finally:
        host.loaded.model.to(torch.float32)
    assert bf16.shared_prefix_tokens == 0 and forced.shared_prefix_tokens > 0


@pytest.mark.slow
def test_bundled_model_outputs_are_identical_with_and_without_reuse(bundled_adapter):
    """fp32 only: in bf16 one output in 32 diverged after 8 tokens (rounding differs between the prefix run
    alone and inside a padded batch), which is why --prefix-cache auto reuses only for fp32 models."""
    path, adapter = bundled_adapter
    loaded = load_base(path, dtype=torch.float32)
    host = AdapterHost(loaded)
    _check_equal(host, loaded.tokenizer, None, rows=8)
    host.attach("a", str(adapter))
    try:
        _check_equal(host, loaded.tokenizer, "a", rows=8)
    finally:
        host.detach("a")
