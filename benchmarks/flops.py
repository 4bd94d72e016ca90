"""Useful generation FLOPs (pure) and the CPU's matmul peak (a probe): utilisation = achieved FLOP/s ÷ peak.

    .venv/bin/python -m benchmarks.flops          # this machine's 2048² matmul GFLOP/s, fp32 and bf16

Used by benchmarks/eval_throughput.py. "Useful" FLOPs, as MFU counts them, identical for every harness that
does the same work: for one row with P real prompt tokens and G generated answer tokens (the stop token not
counted),
- linears: 2 × (decoder linear parameters) × (P + G): every real prompt token and every answer token passes
  through the model once;
- lm_head: 2 × vocab × hidden × G: logits of the tokens that became the answer (prefill keeps only the
  last position's logits, as generate() does);
- attention (QKᵀ and AV): 4 × layers × q_dim × position, summed over positions 1..P+G (causal: a token at
  position t attends to t keys).
Not counted: padding (a harness that pads more does more work, none of it useful), embeddings lookups, norms,
rotary, softmax, and the LoRA adapters' own small matmuls. A shared prompt prefix that a harness computes
once and reuses is still counted for every row: the row needs it, reuse is what makes it cheaper.
"""
from __future__ import annotations

import sys
import time

from lora.estimate.facts import ModelArch

MATMUL_SIZE = 2048


def generation_flops(arch: ModelArch, prompt_tokens: int, new_tokens: int) -> float:
    """Useful FLOPs of one row (module docstring)."""
    if prompt_tokens < 0 or new_tokens < 0:
        raise ValueError("token counts must be >= 0")
    n = prompt_tokens + new_tokens
    linears = 2 * arch.linear_params * n
    lm_head = 2 * arch.vocab_size * arch.hidden_size * new_tokens
    attention = 4 * arch.num_hidden_layers * arch.q_dim * (n * (n + 1) // 2)
    return float(linears + lm_head + attention)


def total_generation_flops(arch: ModelArch, rows: list[tuple[int, int]]) -> float:
    """Sum over rows of (prompt tokens, new tokens)."""
    return sum(generation_flops(arch, p, g) for p, g in rows)


def matmul_gflops(dtype_name: str, size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of a size² × size² torch matmul in this dtype ("fp32" or "bf16") at torch's
    current thread count: the peak the utilisation is measured against."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    torch.mm(a, b)  # warm-up: first call picks the kernel and touches the pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def main() -> int:
    import torch

    print(f"torch threads {torch.get_num_threads()}, {MATMUL_SIZE}² matmul:")
    for name in ("fp32", "bf16"):
        print(f"  {name}: {matmul_gflops(name):.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
