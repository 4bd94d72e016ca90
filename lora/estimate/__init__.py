"""Before a pod is rented: will the recipe fit, how long will it take, what will it cost.

    python finetune.py <name> --plan          # human table (also printed at the top of every launch)
    python finetune.py <name> --plan --json   # one JSON object: peak_gb_per_gpu, steps, hours, cost_usd, ...

This package is the estimator behind those commands, as pure functions:

    arch   = load_arch(base_model, repo_root)            # facts.py: local config.json, else model_facts.json
    counts = count_tokens(dataset_path, base_model, repo_root)              # tokens.py
    inputs = inputs_from_profile(profile, base_model=..., lora_r=..., ..., tokens=counts)   # inputs.py
    plan   = estimate(inputs, arch)                       # estimate.py (memory.py + schedule.py)
    print(format_plan(plan)); plan_to_json(plan); checkpoint_interval_steps(plan, minutes=30)  # output.py

or, for a registry entry, all of the above at once (for_entry.py, what the CLI calls):

    plan = plan_for_entry(registry, entry, num_gpus=4, num_machines=1, usd_per_gpu_hour=None)

Memory is counted part by part, per GPU, in GiB (2**30 bytes, what torch and nvidia-smi call "GB"),
for two moments of a run: the *setup* transient (weights being cast between dtypes while the model
is prepared) and the *training* step (resident weights + LoRA state + activations + logits). The
peak is the larger of the two. docs/plan.md explains every part and compares the estimate with
FinLoRA's measured figures. Time comes from a FLOP count and an explicit utilisation assumption.

No network and no torch at import time: architecture facts come from a local config.json or the
shipped table, and transformers is imported lazily only to count tokens with a local tokenizer.
"""
from __future__ import annotations

from lora.estimate.constants import (
    ALLOCATOR_SLACK,
    CPU_RUNTIME_GIB,
    CUDA_CONTEXT_GIB,
    DEFAULT_CHARS_PER_TOKEN,
    DEFAULT_UTILISATION,
    DORA_TIME_FACTOR,
    GIB,
    LINEAR_MODULES,
    LOGITS_BYTES_16BIT,
    LOGITS_BYTES_FP32,
    NCCL_BUFFERS_GIB,
    PACKING_EFFICIENCY,
)
from lora.estimate.estimate import Plan, Suggestion, estimate
from lora.estimate.facts import FACTS_PATH, MissingFacts, ModelArch, arch_from_config, load_arch, load_facts_table
from lora.estimate.for_entry import plan_for_entry
from lora.estimate.inputs import PlanInputs, inputs_from_profile
from lora.estimate.memory import MemoryEstimate, estimate_memory, lora_trainable_params, memory_parts
from lora.estimate.output import format_plan, plan_to_json
from lora.estimate.schedule import checkpoint_interval_steps, flops_per_token, steps_and_tokens, time_and_cost
from lora.estimate.tokens import TokenCount, count_tokens, padding_factor

__all__ = [
    "ALLOCATOR_SLACK", "CPU_RUNTIME_GIB", "CUDA_CONTEXT_GIB", "DEFAULT_CHARS_PER_TOKEN", "DEFAULT_UTILISATION",
    "DORA_TIME_FACTOR", "FACTS_PATH", "GIB", "LINEAR_MODULES", "LOGITS_BYTES_16BIT", "LOGITS_BYTES_FP32",
    "NCCL_BUFFERS_GIB", "PACKING_EFFICIENCY",
    "MemoryEstimate", "MissingFacts", "ModelArch", "Plan", "PlanInputs", "Suggestion", "TokenCount",
    "arch_from_config", "checkpoint_interval_steps", "count_tokens", "estimate", "estimate_memory",
    "flops_per_token", "format_plan", "inputs_from_profile", "load_arch", "load_facts_table",
    "lora_trainable_params", "memory_parts", "padding_factor", "plan_for_entry", "plan_to_json", "steps_and_tokens",
    "time_and_cost",
]
