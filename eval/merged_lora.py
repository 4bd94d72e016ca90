"""Merged LoRA weights for eval (--merge-lora auto|on|off): an adapter's rows on the base's weights with it merged in.

    python -m eval lora_adapters/<name> --tasks fpb --limit 20 --merge-lora on

Merged adapters (--merge-lora auto|on|off, `merge_choice`): an adapter's rows can run on the base's weights with
the adapter merged in (W + scale * B @ A, a new tensor per layer, the originals restored after), which costs
what the base alone costs; auto does so for a bf16 base on the CPU, where peft's unmerged layers were 1.2-1.4x
slower (docs/eval-benchmark.md).

eval/engine.py's AdapterHost asks `merge_choice` once per attached adapter and runs its rows inside
`merged_into_base` when the choice is to merge.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

MERGE_REQUESTS = ("auto", "on", "off")


@dataclass(frozen=True)
class MergeChoice:
    """Whether one attached adapter's rows run on merged weights, and why (results.json records it)."""

    merge: bool
    why: str

    def record(self) -> dict:
        return {"merged": self.merge, "why": self.why}


def merge_choice(requested: str, dtype: str, cuda: bool, blocker: str | None, copy_bytes: int,
                 free_bytes: int | None) -> MergeChoice:
    """Pure. requested: --merge-lora; dtype: the loaded base's (Loaded.dtype); blocker: why this adapter cannot
    be merged (merge_blocker), else None; copy_bytes: the merged weights held beside the base's while it runs;
    free_bytes: free memory on the base's device (None: unknown).

    auto merges a half-precision base on the CPU only: there peft's unmerged layers (fp32 LoRA weights beside
    bf16 base weights, two skinny matmuls and casts per layer) made an adapter's generation 1.2-1.4x slower than
    merged weights, which cost what the base costs (docs/eval-benchmark.md). An fp32 base keeps the
    unmerged layers (their outputs are FinLoRA's harness's, token for token; merging changes rounding); on CUDA
    it is not measured, so merging is asked for with `on`."""
    if requested == "off":
        return MergeChoice(False, "--merge-lora off")
    if blocker is not None:
        return MergeChoice(False, f"{blocker}: runs unmerged")
    if free_bytes is not None and copy_bytes > free_bytes // 2:
        return MergeChoice(False, f"the merged weights ({copy_bytes / 2**30:.2f} GiB) would take over half the free "
                                  f"memory ({free_bytes / 2**30:.2f} GiB): runs unmerged")
    if requested == "on":
        return MergeChoice(True, "--merge-lora on")
    if cuda:
        return MergeChoice(False, "auto: on CUDA adapters run unmerged (merging is not measured there; "
                                  "--merge-lora on merges)")
    if dtype not in ("bfloat16", "float16"):
        return MergeChoice(False, f"auto: a {dtype} base runs unmerged (outputs as peft computes them)")
    return MergeChoice(True, f"auto: a {dtype} base on the CPU runs merged (unmerged LoRA layers are slow there)")


def _lora_layers(peft_model, name: str) -> list:
    """The tuner layers that hold adapter `name` (every kind: Linear, Embedding, bitsandbytes, ...)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)
            and (name in getattr(m, "lora_A", {}) or name in getattr(m, "lora_embedding_A", {}))]


def merge_blocker(peft_model, name: str) -> str | None:
    """Why adapter `name` cannot run as merged weights, or None. Only plain LoRA on full-precision nn.Linear
    layers is merged: W + scale * B @ A is then the whole adapter. DoRA (a per-column rescale) and other LoRA
    variants, LoRA biases, layers of other kinds (embeddings, bitsandbytes 4/8-bit) and modules_to_save (whole
    trained copies, which the disabled-adapter forward would bypass) run unmerged."""
    from peft.tuners.lora.layer import Linear

    config = peft_model.peft_config[name]
    if getattr(config, "modules_to_save", None):
        return "modules_to_save"
    if getattr(config, "trainable_token_indices", None):
        return "trainable_token_indices"
    for layer in _lora_layers(peft_model, name):
        if type(layer) is not Linear:
            return f"a {type(layer).__module__}.{type(layer).__name__} layer"
        if layer.use_dora.get(name) or name in getattr(layer, "lora_variant", {}):
            return "DoRA or another LoRA variant"
        if getattr(layer, "lora_bias", {}).get(name):
            return "lora_bias"
        if not layer.get_base_layer().weight.dtype.is_floating_point:
            return "a quantised base layer"
    return None


def merged_copy_bytes(peft_model, name: str) -> int:
    """Bytes of the merged weights held while the adapter runs (one new tensor per adapted layer)."""
    return sum(w.numel() * w.element_size() for w in
               (layer.get_base_layer().weight for layer in _lora_layers(peft_model, name)))


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory where the base lives: the GPU's (torch.cuda.mem_get_info) or the machine's available RAM."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown: merge_choice then decides without it
        return None


def merged_weights(peft_model, name: str) -> list:
    """Per layer adapter `name` adapts: (its base layer, a new Parameter W + delta, summed in fp32 and rounded
    once to W's dtype). W itself is not touched."""
    out = []
    with torch.no_grad():
        for layer in _lora_layers(peft_model, name):
            base = layer.get_base_layer()
            w = base.weight
            merged = (w.float() + layer.get_delta_weight(name).to(device=w.device, dtype=torch.float32)).to(w.dtype)
            out.append((base, torch.nn.Parameter(merged, requires_grad=False)))
    return out


@contextlib.contextmanager
def merged_into_base(peft_model, name: str, weights: list | None = None):
    """Adapter `name` as merged weights for the duration: each adapted layer's base weight is swapped for its
    merged one (`weights`, from merged_weights; computed here when None) and every LoRA path is disabled, so the
    forward is the base's own. The original tensors are put back untouched on exit (no W + d - d rounding drift
    across adapters, which peft's merge_adapter/unmerge_adapter would leave in a bf16 base)."""
    weights = merged_weights(peft_model, name) if weights is None else weights
    originals = [(base, base.weight) for base, _ in weights]
    try:
        for base, merged in weights:
            base.weight = merged
        with peft_model.disable_adapter():
            yield peft_model
    finally:
        for base, w in originals:
            base.weight = w
