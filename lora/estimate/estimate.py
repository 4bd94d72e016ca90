"""The estimate: memory + schedule -> Plan; when it does not fit, the cheapest change that does."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from lora.estimate.constants import (
    ALLOCATOR_SLACK,
    CUDA_CONTEXT_GIB,
    DORA_TIME_FACTOR,
    PACKING_EFFICIENCY,
)
from lora.estimate.facts import ModelArch
from lora.estimate.inputs import PlanInputs
from lora.estimate.memory import MemoryEstimate, estimate_memory, lora_trainable_params
from lora.estimate.schedule import steps_and_tokens, time_and_cost, total_flops


@dataclass(frozen=True)
class Suggestion:
    change: str
    overrides: dict
    peak_gb_per_gpu: float


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    arch: ModelArch
    parts: dict[str, float]  # GiB per GPU at the training step
    setup_peak_gb: float  # GiB per GPU while weights are cast (allocated, as torch counts it)
    training_peak_gb: float
    peak_allocated_gb: float  # max of the two: comparable to torch.cuda.max_memory_allocated()
    peak_gb_per_gpu: float  # + CUDA context, allocator slack, NCCL: what the card must hold
    peak_phase: str  # "setup" or "training"
    fits: bool | None
    overflow: str | None
    suggestion: Suggestion | None
    trainable_params: int
    world_size: int
    samples_per_epoch: int
    steps: int
    tokens: int  # tokens the GPUs process, padding included
    flops: float
    seconds: float | None
    hours: float | None
    cost_usd: float | None
    assumptions: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _fits(inputs: PlanInputs, peak: float) -> bool | None:
    return None if inputs.gpu_memory_gb is None else peak <= inputs.gpu_memory_gb


def _candidates(inputs: PlanInputs) -> list[tuple[str, dict]]:
    """Changes to try, cheapest first: smaller micro batch (accumulation raised to keep the global
    batch), 4-bit, ZeRO-3, more machines, then everything at once."""
    candidates: list[tuple[str, dict]] = []
    mb, acc = inputs.micro_batch_size, inputs.gradient_accumulation_steps
    while mb > 1:
        mb = max(1, mb // 2)
        acc2 = math.ceil(inputs.micro_batch_size * acc / mb)
        candidates.append((f"micro_batch_size {mb} (gradient_accumulation_steps {acc2})",
                           {"micro_batch_size": mb, "gradient_accumulation_steps": acc2}))
    four = {"quant_bits": 4, "optimizer_8bit": True}
    if inputs.quant_bits in (8, 16) and inputs.accelerator == "cuda":
        candidates.append(("load the base in 4-bit (QLoRA, NF4 + double quant)", four))
    if inputs.zero_stage != 3 and inputs.world_size > 1:
        z3 = {"zero_stage": 3} | (four if inputs.quant_bits == 8 else {})
        candidates.append(("DeepSpeed ZeRO-3 (shards the base weights over the GPUs)", z3))
    for machines in (2, 3, 4, 6, 8, 12, 16):
        if machines <= inputs.num_machines:
            continue
        ov = {"num_machines": machines, "zero_stage": 3} | (four if inputs.quant_bits == 8 else {})
        candidates.append((f"{machines} machines x {inputs.num_gpus} GPUs with ZeRO-3", ov))
    # nothing single worked: everything at once, fewest machines first
    for machines in sorted({inputs.num_machines, 2, 4, 8, 16}):
        if machines < inputs.num_machines or inputs.num_gpus * machines < 2:
            continue
        ov = {"micro_batch_size": 1, "gradient_accumulation_steps": inputs.micro_batch_size * acc,
              "quant_bits": 4, "optimizer_8bit": True, "zero_stage": 3, "num_machines": machines}
        candidates.append((f"micro batch 1 + 4-bit + ZeRO-3 on {machines} machine(s) x {inputs.num_gpus} GPUs", ov))
    return candidates


def _suggest(inputs: PlanInputs, arch: ModelArch) -> Suggestion | None:
    """Cheapest change that fits, tried in order and confirmed by re-estimating each candidate."""
    if inputs.gpu_memory_gb is None:
        return None

    def fits(ov: dict) -> float | None:
        try:
            cand = inputs.model_copy(update=ov)
            cand = PlanInputs(**cand.model_dump())  # re-validate
        except Exception:
            return None
        peak = estimate_memory(cand, arch).peak
        return peak if peak <= inputs.gpu_memory_gb else None

    for change, ov in _candidates(inputs):
        peak = fits(ov)
        if peak is not None:
            return Suggestion(change=change, overrides=ov, peak_gb_per_gpu=round(peak, 2))
    return None


def _overflow(inputs: PlanInputs, mem: MemoryEstimate) -> str:
    """What does not fit, and the largest part."""
    if mem.phase == "setup":
        largest = "setup transient (weights being cast to fp32 while the model is prepared)"
    else:
        parts = {k: v for k, v in mem.parts.items() if k != "framework_overhead"}
        largest = max(parts, key=parts.get)
    return (f"needs {mem.peak:.2f} GB per GPU of {inputs.gpu_memory_gb:g} GB "
            f"({mem.peak - inputs.gpu_memory_gb:.2f} GB over); largest part: {largest}")


def _assumptions(inputs: PlanInputs, arch: ModelArch) -> dict:
    assumptions = {
        "utilisation": inputs.utilisation,
        "tokens": inputs.token_method,
        "padding_factor": round(inputs.padding_factor, 3) if inputs.padding_factor else None,
        "packing_efficiency": PACKING_EFFICIENCY if inputs.sample_packing else None,
        "flops_per_token": "fwd 2N + bwd 2N (frozen base: input grads only) + recompute 2N if checkpointing"
                           " + attention",
        "cuda_context_gb": CUDA_CONTEXT_GIB if inputs.accelerator == "cuda" else None,
        "allocator_slack": ALLOCATOR_SLACK if inputs.accelerator == "cuda" else None,
        "setup_upcast": inputs.setup_upcast,
        "dora_time_factor": round(DORA_TIME_FACTOR, 3) if inputs.use_dora else None,
        "arch_source": arch.source,
        "gb": "GiB (2**30 bytes)",
    }
    return {k: v for k, v in assumptions.items() if v is not None}


def estimate(inputs: PlanInputs, arch: ModelArch) -> Plan:
    mem = estimate_memory(inputs, arch)
    samples, steps, tokens, step_notes = steps_and_tokens(inputs)
    flops = total_flops(inputs, arch, tokens)
    seconds, hours, cost = time_and_cost(inputs, flops)
    fits = _fits(inputs, mem.peak)
    overflow = suggestion = None
    if fits is False:
        overflow = _overflow(inputs, mem)
        suggestion = _suggest(inputs, arch)
    return Plan(
        inputs=inputs,
        arch=arch,
        parts={k: round(v, 3) for k, v in mem.parts.items()},
        setup_peak_gb=round(mem.setup, 3),
        training_peak_gb=round(mem.training, 3),
        peak_allocated_gb=round(mem.allocated, 3),
        peak_gb_per_gpu=round(mem.peak, 2),
        peak_phase=mem.phase,
        fits=fits,
        overflow=overflow,
        suggestion=suggestion,
        trainable_params=lora_trainable_params(inputs, arch),
        world_size=inputs.world_size,
        samples_per_epoch=samples,
        steps=steps,
        tokens=tokens,
        flops=flops,
        seconds=seconds,
        hours=None if hours is None else round(hours, 3),
        cost_usd=None if cost is None else round(cost, 2),
        assumptions=_assumptions(inputs, arch),
        notes=tuple(mem.notes + step_notes),
    )
