"""PlanInputs: everything the estimate depends on, built from a recipe and its hardware profile."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lora.core.errors import UserError, one_line
from lora.estimate.constants import DEFAULT_UTILISATION, LINEAR_MODULES, MAX_COUNT
from lora.estimate.tokens import TokenCount, padding_factor


class PlanInputs(BaseModel):
    """Everything the estimate depends on. Built by the CLI from a recipe + its hardware profile."""

    # No inf/nan anywhere, and counts bounded, so every figure of the estimate stays a finite float.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    base_model: str
    quant_bits: Literal[4, 8, 16, 32] = 16  # 32 = fp32 weights (the CPU profile)
    lora_r: int = Field(gt=0, le=MAX_COUNT)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_dora: bool = False
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    micro_batch_size: int = Field(gt=0, le=MAX_COUNT)
    gradient_accumulation_steps: int = Field(default=1, gt=0, le=MAX_COUNT)
    sequence_len: int = Field(gt=0, le=MAX_COUNT)
    num_epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0, le=MAX_COUNT)
    sample_packing: bool = False
    gradient_checkpointing: bool = True
    zero_stage: Literal[0, 1, 2, 3] | None = None  # None = no DeepSpeed; 0 = DeepSpeed without sharding
    num_gpus: int = Field(default=1, gt=0, le=MAX_COUNT)  # processes per machine (GPUs; 1 on CPU)
    num_machines: int = Field(default=1, gt=0, le=MAX_COUNT)
    accelerator: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: float | None = Field(default=None, gt=0)  # per GPU (GiB); None = unknown, fits is then None
    gpu_tflops: float | None = Field(default=None, gt=0)  # dense 16-bit peak per GPU; None = no time estimate
    usd_per_gpu_hour: float | None = Field(default=None, ge=0)  # finite: no inf/nan
    utilisation: float = Field(default=DEFAULT_UTILISATION, gt=0, le=1)
    optimizer_8bit: bool = False
    attention: Literal["flash", "sdpa", "eager"] = "flash"
    # How the loader casts weights before training (see docs/plan.md):
    #  "embeddings": axolotl: embed_tokens/lm_head/norms to fp32, then back to 16-bit for training;
    #  "all_unquantized": peft's prepare_model_for_kbit_training on its own (FinLoRA's train_lora.py):
    #     every non-quantised tensor to fp32; DeepSpeed (zero_stage not None) casts back to 16-bit;
    #  "none": weights stay as loaded.
    setup_upcast: Literal["embeddings", "all_unquantized", "none"] = "embeddings"
    dataset_rows: int = Field(ge=0, le=MAX_COUNT)
    dataset_tokens: int = Field(ge=0, le=MAX_COUNT)
    # longest row: sets the activation peak without packing
    max_row_tokens: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    # padded/real tokens without packing; None = 1.0 (stated)
    padding_factor: float | None = Field(default=None, gt=0)
    token_method: str = "given"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str) and v != "all-linear":
            v = [m.strip() for m in v.split(",") if m.strip()]
        if isinstance(v, list) and not v:
            raise ValueError('no module named; give names such as "q_proj,v_proj" or "all-linear"')
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
    """PlanInputs with the hardware fields taken from a lora.recipe.profiles.HardwareProfile.

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
        if _positive_int(seq) and _positive_int(mb) and not overrides.get("sample_packing", fields["sample_packing"]):
            fields["padding_factor"] = padding_factor(tokens.lengths, mb, seq)
    fields.update(overrides)
    try:
        return PlanInputs(**fields)
    except ValidationError as exc:
        raise UserError(describe_invalid(exc)) from None


def _positive_int(v) -> bool:
    return isinstance(v, int) and 0 < v <= MAX_COUNT


def describe_invalid(exc: ValidationError) -> str:
    """One line for the user: which inputs the planner refuses and why (pydantic's text is multi-line)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][:1])  # the field; the union branch pydantic adds is noise
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        parts.append(f"{loc} {err['msg'].removeprefix('Value error, ')} (got {got})")
    return one_line("cannot plan: " + "; ".join(dict.fromkeys(parts)))
