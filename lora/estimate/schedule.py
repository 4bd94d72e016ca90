"""Steps, tokens processed, FLOPs, time and cost; the checkpoint interval that follows from them."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lora.core.errors import UserError
from lora.estimate.constants import DORA_TIME_FACTOR, PACKING_EFFICIENCY
from lora.estimate.facts import ModelArch
from lora.estimate.inputs import PlanInputs
from lora.estimate.memory import lora_trainable_params

if TYPE_CHECKING:
    from lora.estimate.estimate import Plan


def _finite(value: float, what: str, inputs: PlanInputs, hint: str) -> float:
    """The figure itself, or a one-line UserError when it overflows a float (absurd inputs)."""
    if not math.isfinite(value):
        raise UserError(f"cannot plan: {what} overflows (num_epochs {inputs.num_epochs:g}, max_steps "
                        f"{inputs.max_steps}, micro batch {inputs.micro_batch_size} x accum "
                        f"{inputs.gradient_accumulation_steps} x {inputs.world_size} GPUs); {hint}")
    return value


def steps_and_tokens(inputs: PlanInputs) -> tuple[int, int, int, list[str]]:
    """(samples per epoch, optimizer steps, tokens processed incl. padding, notes)."""
    notes: list[str] = []
    rows, tokens = inputs.dataset_rows, inputs.dataset_tokens
    if inputs.max_row_tokens and inputs.max_row_tokens > inputs.sequence_len:
        notes.append(f"some rows exceed sequence_len {inputs.sequence_len} (longest {inputs.max_row_tokens}); "
                     "axolotl drops or truncates them, the token count still includes them")
    if inputs.sample_packing:
        # packed samples are sequence_len bins filled to PACKING_EFFICIENCY; steps count bins, not rows
        samples = math.ceil(tokens / (inputs.sequence_len * PACKING_EFFICIENCY)) if tokens else 0
        pad = 1 / PACKING_EFFICIENCY  # the unfilled tail of each bin is still computed
        per_sample = inputs.sequence_len * PACKING_EFFICIENCY
    else:
        samples = rows
        pad = inputs.padding_factor or 1.0
        per_sample = tokens / rows if rows else 0
        if inputs.padding_factor is None:
            notes.append("padding not counted (no per-row lengths given): time is a lower bound without packing")
    global_batch = inputs.micro_batch_size * inputs.gradient_accumulation_steps * inputs.world_size
    if inputs.max_steps:  # as in HF's Trainer, max_steps overrides epochs
        steps = inputs.max_steps
        processed = steps * global_batch * per_sample * pad
    else:
        epochs_of_samples = _finite(samples * inputs.num_epochs, "the number of samples", inputs, _FEWER)
        steps = math.ceil(epochs_of_samples / global_batch) if samples else 0
        processed = tokens * inputs.num_epochs * pad
    return samples, steps, int(round(_finite(processed, "the token count", inputs, _FEWER))), notes


_FEWER = "give fewer epochs or steps"


def flops_per_token(inputs: PlanInputs, arch: ModelArch, ctx: float) -> float:
    """Training FLOPs per token for LoRA on a frozen base.

    The textbook 6N (2N forward + 4N backward) counts weight gradients, which a frozen base never
    computes: backward needs only input gradients (2N) plus the small LoRA weight gradients. So
    4N + 6*N_lora without checkpointing, and +2N for the recomputed forward with it (6N total, the
    textbook figure by coincidence). Attention's own FLOPs (QK^T, AV; causal halves them) scale with
    row length: QK^T and AV cost 4*q_dim*keys per token per layer and causal masking leaves ctx/2 keys
    on average, so forward 2*layers*q_dim*ctx per token, backward twice that.
    """
    n_mm = arch.linear_params + arch.embedding_params  # lm_head is a matmul even when tied; the lookup is not
    attn_fwd = 2 * arch.num_hidden_layers * arch.q_dim * ctx
    fwd = 2 * n_mm + attn_fwd
    bwd = 2 * n_mm + 2 * attn_fwd
    recompute = fwd if inputs.gradient_checkpointing else 0
    return fwd + bwd + recompute + 6 * lora_trainable_params(inputs, arch)


def total_flops(inputs: PlanInputs, arch: ModelArch, tokens: int) -> float:
    """FLOPs for `tokens` processed tokens; attention cost follows the rows' own length (packed rows
    attend only within themselves: varlen)."""
    ctx = inputs.dataset_tokens / inputs.dataset_rows if inputs.dataset_rows else inputs.sequence_len
    flops = flops_per_token(inputs, arch, min(ctx, inputs.sequence_len)) * tokens
    return _finite(flops, "the FLOP count", inputs, _FEWER)


def time_and_cost(inputs: PlanInputs, flops: float) -> tuple[float | None, float | None, float | None]:
    """(seconds, hours, cost in USD); None where the profile gives no TFLOPS figure or no price."""
    if not inputs.gpu_tflops:
        return None, None, None
    seconds = flops / (inputs.world_size * inputs.gpu_tflops * 1e12 * inputs.utilisation)
    if inputs.use_dora:
        seconds *= DORA_TIME_FACTOR
    _finite(seconds, f"the time at {inputs.gpu_tflops:g} TFLOPS", inputs, "give a realistic TFLOPS figure")
    hours = seconds / 3600
    cost = None
    if inputs.usd_per_gpu_hour is not None:
        cost = hours * inputs.world_size * inputs.usd_per_gpu_hour
        price = f"${inputs.usd_per_gpu_hour:g}/GPU-hour"
        _finite(cost, f"the cost at {price}", inputs, "give a realistic price per GPU-hour")
    return seconds, hours, cost


def checkpoint_interval_steps(plan: Plan, minutes: float = 30) -> int:
    """Steps that take about `minutes` on this plan's hardware: the launcher's save_steps, so a lost pod
    costs at most one interval. Without a time estimate (no TFLOPS figure, e.g. CPU) it falls back to
    ten saves per run."""
    if plan.steps <= 0:
        return 1
    if not plan.seconds:
        return max(1, math.ceil(plan.steps / 10))
    per_step = plan.seconds / plan.steps
    steps = minutes * 60 // per_step if per_step > 0 else math.inf
    return plan.steps if not math.isfinite(steps) else max(1, min(plan.steps, int(steps)))
