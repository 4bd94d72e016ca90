"""Hardware profiles: what a recipe may assume about the machine it runs on.

    python finetune.py NAME --profile h100x1 --plan     # any entry on any profile, the entry unchanged
    python finetune.py NAME --profile auto --check      # a profile built from this machine's GPUs

A profile is data. The template reads the switches (precision, attention, packing, checkpointing,
optimizer); the launcher reads the accelerator and GPU count; the planner reads memory and price.
GPU profiles attend with PyTorch SDPA (FlashAttention-2 kernels inside PyTorch on Ampere and newer, no
compile); `attention_for` upgrades to the flash-attn package when it is importable or the entry asks.
`profile_from_gpus` builds the `auto` profile from detected GPUs (lora/train/preflight.py gathers them).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lora.core.errors import UserError, did_you_mean

ATTENTION_BACKENDS = ("sdpa", "flash_attention_2", "eager")  # axolotl's attn_implementation values we render
AUTO = "auto"  # --profile auto: built from this machine's GPUs


class HardwareProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    accelerator: str  # "cuda" or "cpu"
    num_gpus: int  # GPUs per machine (0 for cpu)
    gpu_name: str | None = None  # as torch names the card, minus "NVIDIA" (matched by profile_from_gpus)
    gpu_memory_gb: float | None = None  # per GPU, as sold (24 for an A5000)
    gpu_bf16_tflops: float | None = None  # dense bf16 peak per GPU (not the sparsity figure), for time estimates
    usd_per_gpu_hour: float | None = None  # default price; --usd-per-gpu-hour overrides it
    bf16: bool
    attn_implementation: str  # axolotl's key, rendered into recipes: sdpa (no compile, no extra package)
    sample_packing: bool
    gradient_checkpointing: bool
    default_zero_stage: int | None  # DeepSpeed ZeRO stage unless the entry says otherwise
    optimizer: str  # for 16-bit bases
    quantized_optimizer: str  # for 4/8-bit bases: paged 8-bit states save memory on GPUs
    lora_kernels: bool  # axolotl's Triton LoRA kernels (CUDA only)

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


def _gpu(name: str, count: int, gpu_name: str, memory_gb: float, tflops: float | None, usd: float | None, what: str,
         bf16: bool = True, description: str | None = None) -> HardwareProfile:
    """A rented-GPU profile: SDPA, packing, checkpointing; ZeRO-2 across GPUs, none on one. description:
    instead of "{count}x {what}, one pod"."""
    return HardwareProfile(
        name=name, description=description or f"{count}x {what}, one pod", accelerator="cuda", num_gpus=count,
        gpu_name=gpu_name, gpu_memory_gb=memory_gb, gpu_bf16_tflops=tflops, usd_per_gpu_hour=usd, bf16=bf16,
        attn_implementation="sdpa", sample_packing=True, gradient_checkpointing=True,
        default_zero_stage=2 if count > 1 else None, optimizer="adamw_torch_fused",
        quantized_optimizer="paged_adamw_8bit", lora_kernels=True,
    )


# Dense bf16 tensor TFLOPS per GPU from NVIDIA's datasheets (the "with sparsity" figure halved):
#   RTX A5000 111.1 (222.2 sparse); RTX 4090 165.2 (Ada whitepaper, FP32 accumulate; 330.4 sparse);
#   RTX A6000 154.8 (309.7 sparse); L40S 362.05 (733 sparse); A100 40/80 GB 312 (624 sparse);
#   H100 SXM5 989.4 (1979 sparse) -- an H100 PCIe is 756, so h100 plans are optimistic on PCIe pods.
# Default $/GPU-hour, on-demand; prices move, pass --usd-per-gpu-hour for your provider's:
#   a5000 0.26: RunPod community cloud (kept from the first profile; no stored source).
#   rtx4090 0.34: RunPod on-demand, deploybase.ai/articles/rtx-4090-cloud, "as of March 2026" (the same
#     site's RunPod table, deploybase.ai/articles/runpod-gpu-pricing, says 0.60: sources disagree).
#   a6000 0.49: approximate, November 2026, no stored source found (RunPod's serverless page,
#     docs.runpod.io/serverless/pricing, lists A6000 flex workers at $0.00034/s = $1.22/h, serverless only).
#   l40s 0.79: RunPod, deploybase.ai/articles/runpod-gpu-pricing, March 2026 (its spot column; on-demand 1.40).
#   a100-40 1.29: approximate, November 2026, no stored source found.
#   a100-80 1.49: low end of "A100 80GB SXM $1.49-$2.49/hr typical on-demand, early 2026",
#     pricegpu.pages.dev/blog/h100-vs-a100-cloud-price.
#   h100 2.69: RunPod Secure Cloud H100 SXM5 "~$2.69/hr", spheron.network/blog/runpod-h100-pricing-2026 (2026).
_RENTED = (
    # name, GPUs, torch's name, GB, TFLOPS, $/h, description
    ("rtx4090x1", 1, "GeForce RTX 4090", 24.0, 165.2, 0.34, "RTX 4090 24 GB (Ada)"),
    ("rtx4090x2", 2, "GeForce RTX 4090", 24.0, 165.2, 0.34, "RTX 4090 24 GB (Ada), PCIe, no NVLink"),
    ("a6000x1", 1, "RTX A6000", 48.0, 154.8, 0.49, "RTX A6000 48 GB (Ampere)"),
    ("a6000x2", 2, "RTX A6000", 48.0, 154.8, 0.49, "RTX A6000 48 GB (Ampere)"),
    ("l40sx1", 1, "L40S", 48.0, 362.05, 0.79, "L40S 48 GB (Ada)"),
    ("l40sx4", 4, "L40S", 48.0, 362.05, 0.79, "L40S 48 GB (Ada), PCIe"),
    ("a100-40x1", 1, "A100", 40.0, 312.0, 1.29, "A100 40 GB (Ampere)"),
    ("a100-40x8", 8, "A100", 40.0, 312.0, 1.29, "A100 40 GB (Ampere), SXM4"),
    ("a100-80x1", 1, "A100", 80.0, 312.0, 1.49, "A100 80 GB (Ampere)"),
    ("a100-80x8", 8, "A100", 80.0, 312.0, 1.49, "A100 80 GB (Ampere), SXM4"),
    ("h100x1", 1, "H100", 80.0, 989.4, 2.69, "H100 80 GB (Hopper)"),
    ("h100x8", 8, "H100", 80.0, 989.4, 2.69, "H100 80 GB (Hopper), SXM5"),
)

PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        _gpu("a5000x4", 4, "RTX A5000", 24.0, 111.1, 0.26, "RTX A5000 24 GB (Ampere)",
             description="4x RTX A5000 24 GB (Ampere), one pod; FinLoRA's reference machine"),
        _gpu("a5000x1", 1, "RTX A5000", 24.0, 111.1, 0.26, "RTX A5000 24 GB (Ampere)",
             description="1x RTX A5000 24 GB (Ampere), no DeepSpeed"),
        *(_gpu(*row) for row in _RENTED),
        HardwareProfile(
            name="cpu",
            description="CPU only (laptop, CI): bf16 where the CPU has it else fp32, SDPA, no Triton kernels, no DeepSpeed",
            accelerator="cpu",
            num_gpus=0,
            bf16=False,
            # packing with SDPA: axolotl drops the padding mask and transformers builds a block-diagonal
            # mask from the position ids (tests/train/test_packing_sdpa.py: each packed row's loss = its loss alone)
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


def attention_for(profile: HardwareProfile, requested: str | None, flash_importable: bool) -> str:
    """The attention backend a launch uses: the entry's request, else flash-attn on a GPU when the package
    imports (it skips the cross-row blocks of packed batches), else the profile's (SDPA)."""
    if requested is not None:
        return requested
    if profile.accelerator == "cuda" and flash_importable:
        return "flash_attention_2"
    return profile.attn_implementation


class GpuInfo(BaseModel):
    """One CUDA device as torch reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # torch.cuda.get_device_name, e.g. "NVIDIA A100-SXM4-80GB"
    total_gib: float  # torch.cuda.get_device_properties(i).total_memory / 2**30
    free_gib: float | None = None  # torch.cuda.mem_get_info, when it could be read
    bf16: bool = True


def known_gpu(info: GpuInfo) -> HardwareProfile | None:
    """The named profile with this card (name and, for A100 40/80, memory within 10%), for its TFLOPS and price."""
    name = info.name.lower()
    for p in PROFILES.values():
        if p.gpu_name and p.gpu_name.lower() in name and abs(p.gpu_memory_gb - info.total_gib) <= 0.1 * p.gpu_memory_gb:
            return p
    return None


def profile_from_gpus(gpus: tuple[GpuInfo, ...]) -> HardwareProfile:
    """`--profile auto`: this machine's GPUs as a profile (memory as torch counts it, in GiB)."""
    if not gpus:
        raise UserError("--profile auto: this machine has no CUDA GPU; train a cpu entry such as "
                        "sentiment_smollm2_cpu, or name a GPU profile with --plan / --dry-run")
    names = sorted({g.name for g in gpus})
    if len(names) > 1:
        raise UserError(f"--profile auto: this machine mixes GPUs ({', '.join(names)}); "
                        "name a profile with --profile, or pick cards with CUDA_VISIBLE_DEVICES")
    first, count = gpus[0], len(gpus)
    known = known_gpu(first)
    bf16 = all(g.bf16 for g in gpus)
    memory = round(min(g.total_gib for g in gpus), 1)
    return _gpu(AUTO, count, first.name.removeprefix("NVIDIA ").strip(), memory,
                known.gpu_bf16_tflops if known else None, known.usd_per_gpu_hour if known else None, "", bf16=bf16,
                description=f"{count}x {first.name} {memory:g} GiB, this machine (--profile auto)"
                            + ("" if known is None else f", priced as {known.name}"))


def use_detected(profile: HardwareProfile) -> None:
    """Make the `auto` profile known for this process (entries then name it like any other)."""
    PROFILES[AUTO] = profile


def profile_named(name: str) -> HardwareProfile:
    """A profile by name; an unknown one is one line with close matches and where the list is."""
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}{did_you_mean(name, PROFILES)}; known: {', '.join(PROFILES)} "
                        f"and {AUTO!r} (this machine's GPUs); docs/pods.md has the table")
    return PROFILES[name]
