"""Hardware profiles: what a recipe may assume about the machine it runs on.

A profile is data. The template reads the switches (precision, attention, packing, checkpointing,
optimizer); the launcher reads the accelerator and GPU count; the planner reads memory and price.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class HardwareProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    accelerator: str  # "cuda" or "cpu"
    num_gpus: int  # GPUs per machine (0 for cpu)
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None  # per GPU, as sold (24 for an A5000)
    gpu_bf16_tflops: float | None = None  # dense bf16 peak per GPU, for time estimates
    usd_per_gpu_hour: float | None = None
    bf16: bool
    attn_implementation: str  # axolotl's key: flash_attention_2 on Ampere+, sdpa on CPU

    @property
    def flash_attention(self) -> bool:
        return self.attn_implementation == "flash_attention_2"

    @property
    def sdp_attention(self) -> bool:
        return self.attn_implementation == "sdpa"

    @property
    def mixed_precision(self) -> str:
        """accelerate's --mixed_precision for this profile."""
        return "bf16" if self.bf16 else "no"
    sample_packing: bool
    gradient_checkpointing: bool
    default_zero_stage: int | None  # DeepSpeed ZeRO stage unless the entry says otherwise
    optimizer: str  # for 16-bit bases
    quantized_optimizer: str  # for 4/8-bit bases: paged 8-bit states save memory on GPUs
    lora_kernels: bool  # axolotl's Triton LoRA kernels (CUDA only)


PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile(
            name="a5000x4",
            description="4x RTX A5000 24 GB (Ampere), one pod; FinLoRA's reference machine",
            accelerator="cuda",
            num_gpus=4,
            gpu_name="RTX A5000",
            gpu_memory_gb=24.0,
            gpu_bf16_tflops=111.1,  # NVIDIA A5000 datasheet: 222.2 TFLOPS bf16 with sparsity, 111.1 dense
            usd_per_gpu_hour=0.26,
            bf16=True,
            attn_implementation="flash_attention_2",
            sample_packing=True,
            gradient_checkpointing=True,
            default_zero_stage=2,
            optimizer="adamw_torch_fused",
            quantized_optimizer="paged_adamw_8bit",
            lora_kernels=True,
        ),
        HardwareProfile(
            name="a5000x1",
            description="1x RTX A5000 24 GB (Ampere), no DeepSpeed",
            accelerator="cuda",
            num_gpus=1,
            gpu_name="RTX A5000",
            gpu_memory_gb=24.0,
            gpu_bf16_tflops=111.1,
            usd_per_gpu_hour=0.26,
            bf16=True,
            attn_implementation="flash_attention_2",
            sample_packing=True,
            gradient_checkpointing=True,
            default_zero_stage=None,
            optimizer="adamw_torch_fused",
            quantized_optimizer="paged_adamw_8bit",
            lora_kernels=True,
        ),
        HardwareProfile(
            name="cpu",
            description="CPU only (laptop, CI): bf16 where the CPU has it else fp32, SDPA, no Triton kernels, no DeepSpeed",
            accelerator="cpu",
            num_gpus=0,
            bf16=False,
            # packing on CPU works with SDPA (axolotl decontaminates packed samples): 1.53x samples/s
            attn_implementation="sdpa",
            sample_packing=True,
            gradient_checkpointing=False,
            default_zero_stage=None,
            optimizer="adamw_torch",
            quantized_optimizer="adamw_torch",
            lora_kernels=False,  # Triton kernels die with "Torch not compiled with CUDA enabled"
        ),
    )
}
