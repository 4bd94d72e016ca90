"""Precision by capability: bf16 where this CPU multiplies bf16 in hardware (AMX or AVX512-BF16), else fp32.

    python -m lora.core.precision                                  # what `auto` resolves to on this machine, and why
    python finetune.py sentiment_smollm2_cpu --precision auto # the default; also fp32 or bf16
    python -m eval lora_adapters/sentiment_smollm2_cpu --tasks fpb --precision auto

`choose(requested, facts)` is pure (tested with faked facts); `cpu_facts()` is the thin gatherer. On a CPU
without bf16 instructions bf16 still runs, emulated and slower than fp32, so `auto` picks fp32 there and an
explicit `bf16` is refused (exit 2) instead of silently running slow.

Recipes stay machine-independent. A committed recipe is `finlora render`'s output and must be the
same file whichever machine rendered it, so `auto` is never resolved into a recipe: a cpu-profile recipe
rendered for `auto` writes fp32's keys (`bf16: false`) plus a comment saying that the launch decides, and
`finetune.py` resolves `auto` at launch on the machine that trains, passing `--bf16 True` to axolotl (and
`--mixed_precision bf16` to accelerate) when the CPU has bf16. The recipe therefore runs as written (fp32)
anywhere, `finlora render --check` holds on every machine, and run.json's `precision` records what
actually ran. An explicit `--precision fp32|bf16` is the user's choice, not the machine's, so it is
rendered into the recipe's keys (like `--zero`), and the launch adds nothing.

What bf16 means in training (axolotl 0.19, measured in docs/demo.md): base weights in bf16
(`bf16: true` -> its torch_dtype), forward/backward under bf16 autocast (TrainingArguments.bf16), LoRA
weights and their AdamW state in fp32 (peft's autocast_adapter_dtype), adapter saved in fp32. transformers
refuses bf16 on a CPU unless TrainingArguments.use_cpu is set, which lora/axolotl_cpu_bf16.py does.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError

REQUESTS = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the bf16 matmul instructions


@dataclass(frozen=True)
class CpuFacts:
    """What this CPU offers for bf16 matmuls, and how that was learnt."""

    bf16_matmul: bool
    evidence: str  # e.g. "avx512_bf16 (torch.cpu._is_avx512_bf16_supported)"


@dataclass(frozen=True)
class Precision:
    """The precision a run uses: name is "fp32" or "bf16"; requested is what the user asked for."""

    name: str
    requested: str
    why: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def record(self) -> dict:
        return {"used": self.name, "requested": self.requested, "why": self.why}


def choose(requested: str, facts: CpuFacts, blocker: str | None = None) -> Precision:
    """The precision for a CPU run. blocker: why this run cannot take bf16 whatever the CPU (e.g. DeepSpeed
    on the CPU); `auto` then means fp32 and an explicit bf16 is refused."""
    if requested not in REQUESTS:
        raise UserError(f"--precision {requested}: choose one of {', '.join(REQUESTS)}")
    if requested == "fp32":
        return Precision("fp32", requested, "asked for (--precision fp32)")
    if blocker is not None:
        if requested == "bf16":
            raise UserError(f"--precision bf16: {blocker}; use --precision fp32 or auto")
        return Precision("fp32", requested, f"auto: {blocker}")
    if not facts.bf16_matmul:
        if requested == "bf16":
            raise UserError(f"--precision bf16: this CPU has no bf16 matmul instructions (AMX or AVX512-BF16; "
                            f"{facts.evidence}), so bf16 would run slower than fp32; use --precision fp32 or auto")
        return Precision("fp32", requested, f"auto: no bf16 matmul on this CPU ({facts.evidence})")
    how = "asked for (--precision bf16)" if requested == "bf16" else "auto"
    return Precision("bf16", requested, f"{how}: the CPU has {facts.evidence}")


def cpu_bf16_blocker(quant_bits: int, zero_stage: int | None) -> str | None:
    """Why a cpu entry cannot train in bf16 whatever the CPU, or None. Only 16-bit bases without DeepSpeed are
    verified: DeepSpeed on the CPU needs use_cpu off (lora/train/axolotl_cpu_ranks.py), which bf16 needs on, and a
    4/8-bit base's bitsandbytes CPU path has not been run in bf16 here."""
    if zero_stage is not None:
        return f"zero_stage {zero_stage} (DeepSpeed) on the CPU trains in fp32 only"
    if quant_bits in (4, 8):
        return f"a {quant_bits}-bit base on the CPU trains in fp32 only: bitsandbytes' CPU path is not verified in bf16"
    return None


def flags_from_cpuinfo(text: str) -> set[str]:
    """The bf16 flags of the first processor's `flags` line of /proc/cpuinfo."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split()) & set(CPU_BF16_FLAGS)
    return set()


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFacts:
    """torch's own checks first (they also ask whether the OS enabled the AMX tiles); /proc/cpuinfo when this
    torch lacks them. torch.backends.cpu.get_cpu_capability() names only the vector ISA ("AVX512"), not
    whether it has the bf16 instructions, so it is not enough on its own."""
    import torch

    checks = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    found, asked = [], []
    for name, attr in checks:
        check = getattr(torch.cpu, attr, None)
        if check is None:
            continue
        asked.append(attr)
        try:
            if check():
                found.append(f"{name} (torch.cpu.{attr})")
        except Exception:  # noqa: BLE001,S112 - a check that fails to run is a check that says no
            continue
    if found:
        return CpuFacts(True, ", ".join(found))
    if len(asked) == len(checks):
        return CpuFacts(False, "torch.cpu reports neither AMX nor AVX512-BF16")
    try:
        flags = flags_from_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuFacts(False, f"this torch has no bf16 checks and {cpuinfo} is unreadable")
    if flags:
        return CpuFacts(True, ", ".join(f"{f} ({cpuinfo})" for f in sorted(flags)))
    return CpuFacts(False, f"{cpuinfo} lists neither amx_bf16 nor avx512_bf16")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lora.core.precision", description="What --precision resolves to here.")
    p.add_argument("--precision", choices=REQUESTS, default="auto")
    args = p.parse_args(argv)
    try:
        chosen = choose(args.precision, cpu_facts())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{chosen.name}: {chosen.why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
