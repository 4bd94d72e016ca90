"""Rule-of-thumb constants of the planner, named so the docs and the output can cite them."""
from __future__ import annotations

GIB = 2**30

# Utilisation (model FLOPs utilisation, MFU): the fraction of the GPU's dense bf16 peak that a LoRA
# step actually achieves. 0.35 because LoRA on bitsandbytes-quantised bases pays for dequantisation
# kernels, small micro batches and PCIe all-reduces on consumer cards; published LoRA/QLoRA runs sit
# at 25-45%. FinLoRA's own 4xA5000 wall clock implies ~0.3-0.45 on our FLOP count (docs/plan.md), so
# 0.35 errs slightly towards "longer and dearer", which is the safe side when renting.
DEFAULT_UTILISATION = 0.35
DEFAULT_CHARS_PER_TOKEN = 4.0  # English/financial text with Llama-3-class BPE vocabularies
PACKING_EFFICIENCY = 0.95  # multipack fills ~95% of each sequence_len bin
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuBLAS workspaces: on the card, invisible to torch's counters
ALLOCATOR_SLACK = 0.05  # caching-allocator fragmentation: reserved exceeds allocated by a few %
NCCL_BUFFERS_GIB = 0.25  # per GPU when more than one process talks over NCCL
CPU_RUNTIME_GIB = 1.0  # python + torch + transformers + axolotl imports (resident set) on CPU
# DoRA recomputes the weight norm of every adapted matrix each step; that is memory traffic more than
# FLOPs, so the FLOP count misses it. FinLoRA measured DoRA 15.9 h vs LoRA 14.9 h on the same catalogue:
# this factor is that ratio, a fitted constant, not derived.
DORA_TIME_FACTOR = 15.9 / 14.9
# Bytes per element of the logits buffer at the loss: the 16-bit logits (kept in the output object),
# their fp32 upcast for the loss, and log-softmax's fp32 output (kept for backward). On fp32 (CPU) the
# upcast is a no-op, so it is 4 + 4.
LOGITS_BYTES_16BIT = 2 + 4 + 4
LOGITS_BYTES_FP32 = 4 + 4

# Upper bound of every count the planner takes (batch, accumulation, sequence_len, steps, rows, tokens,
# GPUs): far beyond any real run, and small enough that every product of them stays a finite float.
MAX_COUNT = 10**15

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
