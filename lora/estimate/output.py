"""The plan for people (format_plan: the table `--plan` prints) and for scripts (plan_to_json)."""
from __future__ import annotations

from lora.core.compute import human_seconds
from lora.estimate.estimate import Plan
from lora.estimate.schedule import checkpoint_interval_steps

_PART_LABELS = {
    "base_weights": "base weights",
    "lora_params_grads_optimizer": "LoRA params + grads + optimizer",
    "activations": "activations",
    "logits": "logits buffer",
    "framework_overhead": "framework/CUDA overhead",
}


def plan_to_json(plan: Plan) -> dict:
    s = plan.suggestion
    return {
        "base_model": plan.inputs.base_model,
        "peak_gb_per_gpu": plan.peak_gb_per_gpu,
        "peak_allocated_gb": plan.peak_allocated_gb,
        "peak_phase": plan.peak_phase,
        "setup_peak_gb": plan.setup_peak_gb,
        "gpu_memory_gb": plan.inputs.gpu_memory_gb,
        "fits": plan.fits,
        "overflow": plan.overflow,
        "suggestion": None if s is None else {"change": s.change, "overrides": s.overrides,
                                              "peak_gb_per_gpu": s.peak_gb_per_gpu},
        "parts": plan.parts,
        "trainable_params": plan.trainable_params,
        "world_size": plan.world_size,
        "samples_per_epoch": plan.samples_per_epoch,
        "steps": plan.steps,
        "tokens": plan.tokens,
        "flops": plan.flops,
        "hours": plan.hours,
        "cost_usd": plan.cost_usd,
        "checkpoint_every_steps": checkpoint_interval_steps(plan),
        "assumptions": plan.assumptions,
        "notes": list(plan.notes),
    }


def _header_lines(plan: Plan) -> list[str]:
    i = plan.inputs
    quant = {4: "4-bit NF4", 8: "8-bit int8", 16: "bf16", 32: "fp32"}[i.quant_bits]
    zero = "no DeepSpeed" if i.zero_stage is None else f"ZeRO-{i.zero_stage}"
    return [
        f"plan: {i.base_model} ({plan.arch.total_params / 1e9:.2f}B params, {quant}), "
        f"LoRA r={i.lora_r}{' DoRA' if i.use_dora else ''} on {','.join(i.modules())}",
        f"  hardware: {i.num_machines} machine(s) x {i.num_gpus} "
        f"{'GPU' if i.accelerator == 'cuda' else 'CPU process(es)'}"
        f"{'' if i.gpu_memory_gb is None else f' {i.gpu_memory_gb:g} GB'}, {zero}, "
        f"micro batch {i.micro_batch_size} x accum {i.gradient_accumulation_steps}, seq {i.sequence_len}"
        f"{', packed' if i.sample_packing else ''}{', grad ckpt' if i.gradient_checkpointing else ''}",
    ]


def _memory_lines(plan: Plan) -> list[str]:
    i = plan.inputs
    lines = [f"  memory per {'GPU' if i.accelerator == 'cuda' else 'process (RAM)'} (GB = GiB)"]
    for k, v in plan.parts.items():
        lines.append(f"    {_PART_LABELS.get(k, k):<34} {v:8.2f}")
    lines.append(f"    {'setup transient (casting weights)':<34} {plan.setup_peak_gb:8.2f}")
    cap = "" if i.gpu_memory_gb is None else f" of {i.gpu_memory_gb:g}"
    lines.append(f"    {'peak':<34} {plan.peak_gb_per_gpu:8.2f}{cap}  (at {plan.peak_phase})")
    return lines


def _fit_lines(plan: Plan) -> list[str]:
    if plan.fits is True:
        return ["  fits: yes"]
    if plan.fits is None:
        return ["  fits: unknown (no GPU memory figure for this profile)"]
    lines = [f"  DOES NOT FIT: {plan.overflow}"]
    if plan.suggestion:
        lines.append(f"  cheapest change that fits: {plan.suggestion.change} "
                     f"-> {plan.suggestion.peak_gb_per_gpu:.2f} GB per GPU")
    else:
        lines.append("  no single change tried (micro batch, 4-bit, ZeRO-3, more machines) makes it fit")
    return lines


def _schedule_lines(plan: Plan) -> list[str]:
    i = plan.inputs
    lines = [
        f"  data: {i.dataset_rows} rows, {i.dataset_tokens} tokens ({i.token_method})",
        f"  steps: {plan.steps} ({plan.samples_per_epoch} samples/epoch x {i.num_epochs:g} epochs / "
        f"{i.micro_batch_size * i.gradient_accumulation_steps * plan.world_size} per step"
        f"{'' if not i.max_steps else ', max_steps'}), {plan.tokens} tokens processed",
    ]
    if plan.hours is not None:
        every = checkpoint_interval_steps(plan)
        # a run shorter than the ~30 min interval saves once, at its end: "every N steps (~30 min)" would be untrue
        saves = (f"checkpoint every {every} steps (~30 min)" if every < plan.steps
                 else "one checkpoint, at the end (under 30 min)")
        lines.append(f"  time: {human_seconds(plan.hours * 3600)} at {i.utilisation:.0%} of {i.gpu_tflops:g} "
                     f"TFLOPS per GPU ({plan.flops:.3g} FLOPs); {saves}")
    else:
        lines.append(f"  time: not estimated (no TFLOPS figure for this hardware); {plan.flops:.3g} FLOPs")
    if plan.cost_usd is not None:
        lines.append(f"  cost: ${plan.cost_usd:.2f} ({plan.world_size} GPUs x {plan.hours:.3g} h "
                     f"x ${i.usd_per_gpu_hour:g}/GPU-hour)")
    return lines


def format_plan(plan: Plan) -> str:
    lines = _header_lines(plan) + _memory_lines(plan) + _fit_lines(plan) + _schedule_lines(plan)
    lines += [f"  note: {n}" for n in plan.notes]
    lines.append(f"  facts: {plan.arch.source}")
    return "\n".join(lines)
