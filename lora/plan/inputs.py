"""PlanInputs: everything the estimate depends on, built from a recipe and its hardware profile."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lora.plan.constants import DEFAULT_UTILISATION, LINEAR_MODULES
from lora.plan.tokens import TokenCount, padding_factor


class PlanInputs(BaseModel):
    """Everything the estimate depends on. Built by the CLI from a recipe + its hardware profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str
    quant_bits: Literal[4, 8, 16, 32] = 16  # 32 = fp32 weights (the CPU profile)
    lora_r: int = Field(gt=0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_dora: bool = False
    lora_dropout: float = 0.05
    micro_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    sequence_len: int = Field(gt=0)
    num_epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = None
    sample_packing: bool = False
    gradient_checkpointing: bool = True
    zero_stage: Literal[0, 1, 2, 3] | None = None  # None = no DeepSpeed; 0 = DeepSpeed without sharding
    num_gpus: int = Field(default=1, gt=0)  # processes per machine (GPUs; 1 on CPU)
    num_machines: int = Field(default=1, gt=0)
    accelerator: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: float | None = None  # per GPU (GiB); None = unknown, fits is then None
    gpu_tflops: float | None = None  # dense 16-bit peak per GPU; None = no time estimate
    usd_per_gpu_hour: float | None = None
    utilisation: float = Field(default=DEFAULT_UTILISATION, gt=0, le=1)
    optimizer_8bit: bool = False
    attention: Literal["flash", "sdpa", "eager"] = "flash"
    # How the loader casts weights before training (see docs/plan.md):
    #  "embeddings": axolotl: embed_tokens/lm_head/norms to fp32, then back to 16-bit for training;
    #  "all_unquantized": peft's prepare_model_for_kbit_training on its own (FinLoRA's train_lora.py):
    #     every non-quantised tensor to fp32; DeepSpeed (zero_stage not None) casts back to 16-bit;
    #  "none": weights stay as loaded.
    setup_upcast: Literal["embeddings", "all_unquantized", "none"] = "embeddings"
    dataset_rows: int = Field(ge=0)
    dataset_tokens: int = Field(ge=0)
    max_row_tokens: int | None = None  # longest row: sets the activation peak without packing
    padding_factor: float | None = None  # padded/real tokens without packing; None = 1.0 (stated)
    token_method: str = "given"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str) and v != "all-linear":
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_machines

    def modules(self) -> tuple[str, ...]:
        return LINEAR_MODULES if self.target_modules == "all-linear" else tuple(self.target_modules)


def _profile_fields(profile, quant: int) -> dict:
    return dict(
        quant_bits=quant,
        accelerator=profile.accelerator,
        num_gpus=max(1, profile.num_gpus),
        gpu_memory_gb=profile.gpu_memory_gb,
        gpu_tflops=profile.gpu_bf16_tflops,
        usd_per_gpu_hour=profile.usd_per_gpu_hour,
        gradient_checkpointing=profile.gradient_checkpointing,
        sample_packing=profile.sample_packing,
        zero_stage=profile.default_zero_stage,
        attention="flash" if profile.flash_attention else ("sdpa" if profile.sdp_attention else "eager"),
        optimizer_8bit="8bit" in (profile.quantized_optimizer if quant in (4, 8) else profile.optimizer),
    )


def inputs_from_profile(profile, *, tokens: TokenCount | None = None, **overrides) -> PlanInputs:
    """PlanInputs with the hardware fields taken from a lora.profiles.HardwareProfile.

    Recipe fields (base_model, lora_r, micro_batch_size, sequence_len, ...) come in overrides; a
    TokenCount fills the dataset fields. Anything in overrides wins over the profile.
    """
    fields = _profile_fields(profile, overrides.get("quant_bits", 16 if profile.bf16 else 32))
    if tokens is not None:
        fields.update(
            dataset_rows=tokens.rows,
            dataset_tokens=tokens.tokens,
            max_row_tokens=tokens.max_row_tokens,
            token_method=tokens.method,
        )
        seq = overrides.get("sequence_len")
        mb = overrides.get("micro_batch_size")
        if seq and mb and not overrides.get("sample_packing", fields["sample_packing"]):
            fields["padding_factor"] = padding_factor(tokens.lengths, mb, seq)
    fields.update(overrides)
    return PlanInputs(**fields)
