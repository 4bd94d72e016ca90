"""Quiet the known import-time chatter of optional libraries (torchao, torch's pytree, bitsandbytes), nothing else.

    finlora eval lora_adapters/sentiment_smollm2_cpu --tasks fpb   # no torchao "Failed to load" lines

Each filter matches one known message, so anything else those libraries log still shows.
"""
from __future__ import annotations

import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(f in text for f in self.fragments)


def quiet_library_noise(keep_bitsandbytes: bool = False) -> None:
    """Drop the import-time chatter of optional libraries that says nothing about this run; each filter
    matches one known message, so anything else those libraries log still shows."""
    # torchao (pulled in by peft/transformers) tries its CUDA-only kernels on import and logs each .so.
    logging.getLogger("torchao").addFilter(_DropMessages("Failed to load "))
    # torchao registers Enums with torch's pytree, which torch now deprecates, once per Enum.
    logging.getLogger("torch.utils._pytree").addFilter(_DropMessages("is an Enum subclass"))
    # bitsandbytes probes an optional hub kernel for CPU 4-bit; offline it is absent and its own code is
    # used. Only worth saying when the run actually loads a 4/8-bit base.
    warnings.filterwarnings("ignore", message=r"Skipping publisher trust check", category=UserWarning)
    if not keep_bitsandbytes:
        logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("from kernels-community"))
