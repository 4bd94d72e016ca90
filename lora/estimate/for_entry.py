"""The plan of one registry entry, as `finetune.py <name> --plan` and every launch print it.

    plan = plan_for_entry(registry, registry.get(name), num_gpus=4, num_machines=1)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, repo_relative
from lora.estimate.estimate import Plan, estimate
from lora.estimate.facts import load_arch
from lora.estimate.inputs import inputs_from_profile
from lora.estimate.tokens import count_tokens
from lora.recipe.profiles import PROFILES

if TYPE_CHECKING:
    from lora.recipe.registry import Entry, Registry


def _entry_overrides(entry: Entry, base_model: str, num_gpus: int, num_machines: int) -> dict:
    """The recipe's fields of PlanInputs; the profile supplies the rest."""
    on_gpu = PROFILES[entry.profile].accelerator == "cuda"
    r = entry.resolved
    return dict(
        base_model=base_model,
        # a CPU run keeps a 16-bit recipe's base in fp32; 4/8-bit bases stay quantised
        quant_bits=entry.quant_bits if on_gpu or entry.quant_bits < 16 else 32,
        lora_r=entry.lora_r, target_modules=r.target_modules, use_dora=entry.peft_use_dora,
        lora_dropout=r.lora_dropout, micro_batch_size=entry.batch_size,
        gradient_accumulation_steps=entry.gradient_accumulation_steps, sequence_len=r.sequence_len,
        num_epochs=entry.num_epochs, max_steps=entry.max_steps, sample_packing=r.sample_packing,
        zero_stage=r.zero_stage, num_gpus=max(1, num_gpus), num_machines=num_machines,
    )


def plan_for_entry(registry: Registry, entry: Entry, *, num_gpus: int, num_machines: int = 1,
                   usd_per_gpu_hour: float | None = None) -> Plan:
    """Resolve the entry's base model, architecture and token count, and estimate on its profile.

    num_gpus: GPUs (or CPU processes) per machine, at least 1 is used; usd_per_gpu_hour overrides the
    profile's price. Raises MissingFacts when the architecture is not on disk, UserError (one line) for
    a missing or malformed dataset and inputs the planner refuses."""
    profile = PROFILES[entry.profile]
    base = registry.resolve_base_model(entry)
    arch = load_arch(base, REPO_ROOT)
    dataset = registry.resolve_path(entry.dataset_path)
    if not dataset.is_file():
        raise UserError(f"--plan needs the dataset to count its rows and tokens: {repo_relative(dataset)} is missing")
    tokens = count_tokens(dataset, base, REPO_ROOT)
    overrides = _entry_overrides(entry, base, num_gpus, num_machines)
    if usd_per_gpu_hour is not None:
        overrides["usd_per_gpu_hour"] = usd_per_gpu_hour
    return estimate(inputs_from_profile(profile, tokens=tokens, **overrides), arch)
