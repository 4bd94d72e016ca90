"""An axolotl plugin that lets `bf16: true` train on a CPU; cpu-profile recipes list it under `plugins:`.

    python finetune.py sentiment_smollm2_cpu --precision bf16    # the recipe names lora.axolotl_cpu_bf16.CpuBf16

axolotl 0.19 turns `bf16: true` into bf16 base weights (its resolve_dtype) and TrainingArguments(bf16=True)
(autocast); peft keeps the LoRA weights in fp32 (autocast_adapter_dtype), so the optimizer state is fp32
too. But transformers refuses bf16 without a GPU unless TrainingArguments.use_cpu is set ("Your setup
doesn't support bf16/gpu. You need to assign use_cpu"), and axolotl never sets it. This plugin sets it,
only when the recipe asks for bf16: use_cpu is what ACCELERATE_USE_CPU (lora/train/environment.py) already means for
a CPU launch, and it would drop DeepSpeed, so it stays off in fp32 (lora/core/precision.py refuses bf16 with
DeepSpeed on the CPU).
"""
from __future__ import annotations

from axolotl.integrations.base import BasePlugin


class CpuBf16(BasePlugin):
    def get_training_args(self, cfg):
        if cfg.bf16 is True or cfg.bfloat16 is True:
            return {"use_cpu": True}
        return None
