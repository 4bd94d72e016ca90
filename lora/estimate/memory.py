"""Memory per GPU (GiB), part by part, at the setup transient and at the training step.

docs/plan.md explains every part and compares the estimate with FinLoRA's measured figures.
"""
from __future__ import annotations

from dataclasses import dataclass

from lora.estimate.constants import (
    ALLOCATOR_SLACK,
    CPU_RUNTIME_GIB,
    CUDA_CONTEXT_GIB,
    GIB,
    LOGITS_BYTES_16BIT,
    LOGITS_BYTES_FP32,
    NCCL_BUFFERS_GIB,
)
from lora.estimate.facts import ModelArch
from lora.estimate.inputs import PlanInputs


def check_target_modules(inputs: PlanInputs, arch: ModelArch) -> None:
    """UserError (one line) naming the modules the model lacks and the linear modules it has."""
    arch.check_modules(inputs.modules(), inputs.base_model)


def lora_trainable_params(inputs: PlanInputs, arch: ModelArch) -> int:
    check_target_modules(inputs, arch)
    shapes = arch.module_shapes()
    per_layer = sum(inputs.lora_r * (shapes[m][0] + shapes[m][1]) for m in inputs.modules())
    if inputs.use_dora:
        per_layer += sum(shapes[m][1] for m in inputs.modules())  # DoRA's magnitude vector
    return per_layer * arch.num_hidden_layers


def _quantized_linear_bytes(inputs: PlanInputs, arch: ModelArch) -> float:
    n = arch.linear_params
    if inputs.quant_bits == 4:
        # NF4: 4 bits per weight + one absmax per 64-weight block. Double quantisation stores that absmax
        # as 8 bits plus one fp32 scale per 256 blocks: 0.5 + 1/64 + 4/(64*256) bytes per weight.
        return n * (0.5 + 1 / 64 + 4 / (64 * 256))
    if inputs.quant_bits == 8:
        # LLM.int8: 1 byte per weight + one fp32 scale per output row.
        out_rows = sum(o for _, o in arch.module_shapes().values()) * arch.num_hidden_layers
        return n + 4 * out_rows
    return n * (2 if inputs.quant_bits == 16 else 4)


def _half_bytes(inputs: PlanInputs) -> int:
    """Bytes of the compute dtype: bf16 on GPUs, fp32 on CPU (quant_bits 32)."""
    return 4 if inputs.quant_bits == 32 else 2


def _shard3(inputs: PlanInputs) -> int:
    """ZeRO-3 partitions parameters (frozen base included) over all ranks."""
    return inputs.world_size if inputs.zero_stage == 3 else 1


def _base_weight_bytes(inputs: PlanInputs, arch: ModelArch, notes: list[str]) -> float:
    """Resident base weights per GPU during training."""
    z, fp32 = inputs.zero_stage, inputs.quant_bits == 32
    quantized = inputs.quant_bits in (4, 8)
    linear_b = _quantized_linear_bytes(inputs, arch)
    weights_linear = linear_b
    # Training-time storage of the non-quantised tensors (embeddings, lm_head, norms: never quantised by
    # bitsandbytes). prepare_model_for_kbit_training alone leaves them fp32 (FinLoRA without DeepSpeed);
    # DeepSpeed's engine casts the module to 16-bit; axolotl casts embeddings and norms back itself.
    stays_fp32 = inputs.setup_upcast == "all_unquantized" and z is None
    unq_bytes_train = 4 if (stays_fp32 or fp32) else 2
    if inputs.setup_upcast == "all_unquantized" and not quantized and not fp32:
        # peft upcasts the 16-bit linears too (they are not int8/NF4)
        weights_linear = arch.linear_params * (4 if stays_fp32 else 2)
    base = (weights_linear + arch.unquantized_params * unq_bytes_train) / _shard3(inputs)
    if z == 3:
        # the layer being computed is gathered in full, and the next one prefetched
        base += 2 * (arch.linear_params_per_layer * (linear_b / max(arch.linear_params, 1)))
        if inputs.quant_bits == 8:
            notes.append("ZeRO-3 cannot partition bitsandbytes int8 weights; "
                         "use 4-bit (quant storage bf16) with ZeRO-3")
    return base


def _setup_weight_bytes(inputs: PlanInputs, arch: ModelArch, base: float) -> float:
    """Setup transient: while tensors are cast one by one to fp32 (or back), the largest one exists in
    both dtypes. Peak = weights with the upcast tensors at fp32 + one 16-bit copy of the largest."""
    if inputs.setup_upcast == "none" or inputs.quant_bits == 32:
        return base
    quantized = inputs.quant_bits in (4, 8)
    linear_b = _quantized_linear_bytes(inputs, arch)
    unq = arch.unquantized_params
    if inputs.setup_upcast == "all_unquantized":
        up_params = unq if quantized else arch.total_params
        rest = linear_b if quantized else 0
    else:  # axolotl: embed_tokens + lm_head (+ norms, negligible) to fp32
        emb = arch.embedding_params * (1 if arch.tie_word_embeddings else 2)
        up_params = emb
        rest = (linear_b if quantized else arch.linear_params * 2) + (unq - emb) * 2
    return (up_params * 4 + rest + arch.largest_unquantized_tensor * 2) / _shard3(inputs)


def _lora_state_bytes(inputs: PlanInputs, arch: ModelArch) -> tuple[float, float]:
    """(adapter weights + grads + optimizer state, adapter weights alone) per GPU.

    fp32 adapter weights (peft upcasts adapters), fp32 grads, AdamW m+v (fp32 or 8-bit); DeepSpeed keeps
    an fp32 master copy. ZeRO-1 shards optimizer state, 2 adds grads, 3 adds params."""
    w, z = inputs.world_size, inputs.zero_stage
    p = lora_trainable_params(inputs, arch)
    opt_bytes = 2 if inputs.optimizer_8bit else 8
    master = 4 if z is not None else 0
    lora_params = p * 4 / (w if z == 3 else 1)
    lora_grads = p * 4 / (w if (z or 0) >= 2 else 1)
    lora_opt = p * (opt_bytes + master) / (w if (z or 0) >= 1 else 1)
    return lora_params + lora_grads + lora_opt, p * 4 / (w if z == 3 else 1)


def _activation_seq(inputs: PlanInputs) -> int:
    """Row length of the longest micro batch: packed bins are sequence_len long; without packing the
    batch is padded to its longest row."""
    if inputs.sample_packing:
        return inputs.sequence_len
    return min(inputs.sequence_len, inputs.max_row_tokens or inputs.sequence_len)


def _layer_bytes_per_token(inputs: PlanInputs, arch: ModelArch, seq: int) -> int:
    """Bytes saved for backward per token in one decoder layer."""
    half = _half_bytes(inputs)
    h, i, q, kv = arch.hidden_size, arch.intermediate_size, arch.q_dim, arch.kv_dim
    # residual + norm outputs (4h), q/k/v and their rotary copies, attention output, the SwiGLU's
    # gate/up/act/product (4i).
    elems = 4 * h + 3 * q + 3 * kv + 4 * i
    layer_bytes = elems * half + 2 * 2 * h * 4  # + each RMSNorm keeps its fp32 upcast input and output
    if inputs.attention == "eager":
        layer_bytes += 2 * arch.num_attention_heads * seq * half  # scores + softmax, per token
    shapes = arch.module_shapes()
    for m in inputs.modules():
        if inputs.lora_dropout > 0:
            layer_bytes += shapes[m][0] * half  # dropout's copy of the module input
        layer_bytes += inputs.lora_r * 4
        if inputs.use_dora:
            layer_bytes += shapes[m][1] * half  # DoRA keeps the base output for the magnitude rescale
    return layer_bytes


def _activation_bytes(inputs: PlanInputs, arch: ModelArch, notes: list[str]) -> tuple[float, float]:
    """(activations, logits buffer) at the step's peak moment.

    Two moments compete inside a step. At the loss: everything stored for backward + the logits buffer.
    Later in backward the logits buffer is gone (only the 16-bit logits the output object holds remain)
    but, with checkpointing, one layer is recomputed in full and its gradients are live. Summing both
    would double count, so the step peak is the larger of the two."""
    seq = _activation_seq(inputs)
    if not inputs.sample_packing and not inputs.max_row_tokens:
        notes.append("longest row unknown: activations sized for full sequence_len rows")
    half = _half_bytes(inputs)
    t = inputs.micro_batch_size * seq  # tokens in the micro batch
    layer_bytes = _layer_bytes_per_token(inputs, arch, seq)
    logits_at_loss = t * arch.vocab_size * (LOGITS_BYTES_FP32 if inputs.quant_bits == 32 else LOGITS_BYTES_16BIT)
    logits_kept = t * arch.vocab_size * half
    final_norm = t * arch.hidden_size * (half + 8)
    if inputs.gradient_checkpointing:
        stored = t * arch.num_hidden_layers * arch.hidden_size * half  # each layer's input, kept for the recompute
        recompute = 2 * t * layer_bytes  # one layer's activations + their gradients
    else:
        stored = t * arch.num_hidden_layers * layer_bytes
        recompute = 0
    stored += final_norm
    if inputs.use_dora:
        # DoRA materialises W + BA of the module being computed (16-bit) to take its norm
        shapes = arch.module_shapes()
        stored += max(a * b for a, b in (shapes[m] for m in inputs.modules())) * half
    if logits_at_loss >= recompute + logits_kept:
        return stored, logits_at_loss
    return stored + recompute, logits_kept


def memory_parts(inputs: PlanInputs, arch: ModelArch) -> tuple[dict[str, float], float, list[str]]:
    """(training parts in GiB, setup peak in GiB, notes) per GPU."""
    notes: list[str] = []
    base = _base_weight_bytes(inputs, arch, notes)
    setup = _setup_weight_bytes(inputs, arch, base)
    lora, lora_weights = _lora_state_bytes(inputs, arch)
    setup += lora_weights
    act, logits = _activation_bytes(inputs, arch, notes)
    parts = {
        "base_weights": base / GIB,
        "lora_params_grads_optimizer": lora / GIB,
        "activations": act / GIB,
        "logits": logits / GIB,
    }
    return parts, setup / GIB, notes


def _overhead_gib(inputs: PlanInputs, allocated_gib: float) -> float:
    if inputs.accelerator == "cpu":
        return CPU_RUNTIME_GIB
    extra = CUDA_CONTEXT_GIB + ALLOCATOR_SLACK * allocated_gib
    if inputs.world_size > 1:
        extra += NCCL_BUFFERS_GIB
    return extra


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, float]  # GiB per GPU at the training step, framework overhead included
    setup: float  # GiB allocated at the setup transient
    training: float  # GiB allocated at the training step
    allocated: float  # max of the two
    peak: float  # + framework overhead: what the card (or RAM) must hold
    phase: str  # "setup" or "training"
    notes: list[str]


def estimate_memory(inputs: PlanInputs, arch: ModelArch) -> MemoryEstimate:
    parts, setup, notes = memory_parts(inputs, arch)
    if inputs.accelerator == "cpu":
        # measured, not modelled: benchmarks/cpu_peak_memory.py on the bundled entries (docs/plan.md)
        notes.append("on CPU the measured peak RSS was 1.2-1.4x this estimate for 16-bit bases and 2.2-2.5x "
                     "for 4-bit (bitsandbytes' CPU path); keep that headroom")
    training = sum(parts.values())
    allocated = max(setup, training)
    overhead = _overhead_gib(inputs, allocated)
    return MemoryEstimate(
        parts=dict(parts, framework_overhead=overhead),
        setup=setup,
        training=training,
        allocated=allocated,
        peak=allocated + overhead,
        phase="setup" if setup > training else "training",
        notes=notes,
    )
