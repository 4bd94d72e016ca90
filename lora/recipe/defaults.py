"""The two defaults sets and the one place an entry's effective training values are decided.

    resolve(entry) -> Resolved      # pure; render, the planner, --list and run.json all read it

`finlora` (an entry without `defaults`): what FinLoRA's generators render (lora/finetune.py for 4/8-bit,
lora/finetune_lora_plain.py for 16-bit, commit 7e1cf82) and what its published adapter cards trained,
so FinLoRA's registry files are drop-in. `tuned`: our own choices (all-linear targets, packing where the
profile packs, warmup ratio, paged 8-bit states). A key the entry sets beats either set. What a hardware
profile cannot do (DeepSpeed and bf16 on CPU) is forced and listed in `forced`, so the
recipe header says where a run differs from its set instead of differing silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lora.core.prompts import DEFAULT_PROMPT_FORMAT
from lora.recipe.profiles import PROFILES

if TYPE_CHECKING:
    from lora.recipe.registry import Entry

DEFAULTS_SETS = ("finlora", "tuned")
FINLORA_TARGETS = ("q_proj", "k_proj", "v_proj")
# FinLoRA's generator sets this pad token when "Llama-3" is in base_model; only Llama-3 vocabularies
# have it (anywhere else axolotl would add a new token and resize the embeddings).
FINLORA_PAD_TOKEN = "<|end_of_text|>"

# FinLoRA's 4-bit cards say `adapter: lora` + `load_in_4bit: true` and nothing else about quantisation.
# Under axolotl 0.9.1 (the cards' version) that passed load_in_4bit=True to transformers 4.51.3's
# from_pretrained, which builds BitsAndBytesConfig(load_in_4bit=True): FP4, no double quantisation,
# fp32 compute, uint8 storage. FinLoRA's generator's top-level bnb_4bit_* keys are not axolotl keys and
# were dropped. axolotl 0.19 passes nothing for lora + load_in_4bit (the base stays bf16), so we render
# `adapter: qlora` with these kwargs, which is what quantises the same way. (docs/registry.md has the lines.)
FINLORA_BNB_4BIT = {
    "bnb_4bit_quant_type": "fp4",
    "bnb_4bit_use_double_quant": False,
    "bnb_4bit_compute_dtype": "float32",
    "bnb_4bit_quant_storage": "uint8",
}
# axolotl's own QLoRA config (loaders/model.py, adapter qlora) is NF4 with double quantisation; ZeRO-3
# must shard the packed weights with the bf16 rest, so it stores them as bf16 (same values).
ZERO3_STORAGE = {"bnb_4bit_quant_storage": "bfloat16"}

# What a finlora recipe keeps different from FinLoRA's, each with why it trains the same thing.
FINLORA_KEPT = (
    "output_dir, dataset_prepared_path: where files go",
    "logging_steps (FinLoRA 500): how often the loss is printed",
    "saves_per_epoch 4 (FinLoRA 1), save_total_limit: checkpoint cadence, for resuming; no effect on the weights",
    "evals_per_epoch: eval loss only; nothing is selected by it",
    "attn_implementation (FinLoRA: the model's default): a kernel for the same attention, padding masked",
    "gradient_checkpointing_kwargs use_reentrant false: recomputes the same activations (RNG state kept)",
    "chat_template, model_type, wandb_*: unused by the `format` prompt strategy / same class / logging",
    "seed 42 written out: FinLoRA's is unset, which axolotl and the HF Trainer both take as 42",
)


@dataclass(frozen=True)
class Resolved:
    """An entry's effective values: explicit keys, else its defaults set, else what the profile forces."""

    defaults: str
    generator: str  # which FinLoRA generator a finlora entry follows, or "ours"
    lora_dropout: float
    target_modules: list[str] | str
    sequence_len: int
    val_set_size: float
    sample_packing: bool
    prompt_format: str
    lr_scheduler: str
    warmup_steps: int | None
    warmup_ratio: float | None
    zero_stage: int | None
    optimizer: str
    tf32: bool
    gradient_checkpointing: bool
    bnb_4bit: dict  # bnb_config_kwargs for a 4-bit base ({} = axolotl's QLoRA defaults)
    pad_token: str | None
    forced: tuple[str, ...]  # what the profile changed from the set, for the header
    kept: tuple[str, ...]  # finlora only: deliberate differences that train the same thing


def finlora_optimizer(quant_bits: int) -> str:
    # finetune.py: 8-bit adamw_bnb_8bit, 4-bit paged_adamw_8bit; finetune_lora_plain.py: adamw_torch_fused
    return {8: "adamw_bnb_8bit", 4: "paged_adamw_8bit"}.get(quant_bits, "adamw_torch_fused")


def resolve(entry: Entry) -> Resolved:
    profile = PROFILES[entry.profile]
    cpu = profile.accelerator == "cpu"
    finlora = entry.defaults == "finlora"
    forced: list[str] = []

    def pick(key: str, finlora_value, tuned_value):
        value = getattr(entry, key)
        return value if value is not None else finlora_value if finlora else tuned_value

    if entry.warmup_steps is not None or entry.warmup_ratio is not None:
        warmup_steps, warmup_ratio = entry.warmup_steps, entry.warmup_ratio
    else:
        warmup_steps, warmup_ratio = (10, None) if finlora else (None, 0.03)

    zero_stage = pick("zero_stage", 1, profile.default_zero_stage)
    if finlora and entry.zero_stage is None and cpu:
        zero_stage = None
        forced.append("zero_stage: no DeepSpeed on the cpu profile (FinLoRA: ZeRO-1)")

    optimizer = pick("optimizer", finlora_optimizer(entry.quant_bits),
                     profile.quantized_optimizer if entry.quant_bits < 16 else profile.optimizer)
    if finlora and cpu:
        # measured with bitsandbytes 0.50.2: its 8-bit AdamW steps on CPU; paged states fall back to unpaged
        # (same update, bitsandbytes warns). What the CPU cannot do is bf16 and DeepSpeed.
        forced.append("bf16: off, fp32 training (FinLoRA: bf16 auto, i.e. bf16 on its A5000s)")
        if optimizer.startswith("paged_"):
            forced.append(f"optimizer: {optimizer} runs unpaged on CPU (bitsandbytes' fallback; same update)")

    bnb: dict = {}
    if entry.quant_bits == 4:
        bnb = dict(FINLORA_BNB_4BIT) if finlora else {}
        if zero_stage == 3:
            bnb.update(ZERO3_STORAGE)

    pad = FINLORA_PAD_TOKEN if finlora and "Llama-3" in entry.base_model else None
    generator = "ours"
    if finlora:
        generator = "finetune_lora_plain.py (16-bit)" if entry.quant_bits == 16 else "finetune.py"

    return Resolved(
        defaults=entry.defaults,
        generator=generator,
        lora_dropout=pick("lora_dropout", 0.05, 0.05),
        target_modules=pick("target_modules", list(FINLORA_TARGETS), "all-linear"),
        sequence_len=pick("sequence_len", 4096, 4096),
        val_set_size=pick("val_set_size", 0.02, 0.0),
        sample_packing=pick("sample_packing", False, profile.sample_packing),
        prompt_format=pick("prompt_format", "finlora_inst", DEFAULT_PROMPT_FORMAT),
        lr_scheduler=pick("lr_scheduler", "cosine", "cosine"),
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
        zero_stage=zero_stage,
        optimizer=optimizer,
        tf32=False if finlora else profile.accelerator == "cuda",
        gradient_checkpointing=True if finlora else profile.gradient_checkpointing,
        bnb_4bit=bnb,
        pad_token=pad,
        forced=tuple(forced),
        kept=FINLORA_KEPT if finlora else (),
    )
