"""The GPU pod check's model: a small random-weight Llama with the bundled tokenizer, saved like any base.

    python benchmarks/gpu_pod_check.py --cpu-smoke --out /tmp/pod-smoke   # builds one in /tmp/pod-smoke/work/tiny-llama

Random weights with the bundled tokenizer's files (models/base_model/smollm2-135m-instruct/tokenizer*.json): the
98 MB GGUF is too big to carry to a lent GPU machine (docs/pods.md). tests/train/test_packing_sdpa.py uses
tiny_llama too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO / "models" / "base_model" / "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


# ---------------------------------------------------------------- the tiny model


def tiny_llama(vocab_size: int, *, attn_implementation: str = "sdpa", seed: int = 0, hidden: int = 64,
               layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128):
    """A random-weight Llama with the given vocabulary (fp32); small enough for CPU tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2)
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config)


def build_model_folder(out: Path, *, hidden: int = 512, layers: int = 8, heads: int = 8, kv_heads: int = 4,
                       intermediate: int = 1536) -> Path:
    """Save a random Llama (~50M parameters with the 49k vocabulary) with the bundled tokenizer into `out`."""
    from transformers import AutoTokenizer

    missing = [f for f in TOKENIZER_FILES[:2] if not (TOKENIZER_DIR / f).is_file()]
    if missing:
        raise SystemExit(f"error: {TOKENIZER_DIR} lacks {', '.join(missing)}: carry them (docs/pods.md)")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    model = tiny_llama(len(tokenizer), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                       intermediate=intermediate)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (TOKENIZER_DIR / name).is_file():
            shutil.copy2(TOKENIZER_DIR / name, out / name)
    return out
