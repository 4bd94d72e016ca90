"""CUDA GPUs this process can use (the eval's process count and the launch's GPU count read it).

    python -c "from lora.core.gpus import detect_cuda_gpus; print(detect_cuda_gpus())"
"""
from __future__ import annotations


def detect_cuda_gpus() -> int:
    """GPUs torch can use here (honours CUDA_VISIBLE_DEVICES); 0 on a CPU-only machine."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
