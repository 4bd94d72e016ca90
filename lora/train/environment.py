"""The training child's environment: telemetry off, offline where nothing is fetched, secrets never written.

    finlora train sentiment_smollm2_cpu   # the child runs with HF_DATASETS_OFFLINE=1, AXOLOTL_DO_NOT_TRACK=1, …
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Never copied into anything we write (run.json, recipes, logs); the child still inherits them so
# gated hub models can download on a pod.
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")


def child_environment(base: dict[str, str], *, offline: bool, cpu: bool = False, deepspeed: bool = False,
                      python_bin: str = sys.executable) -> dict[str, str]:
    """The child's environment: telemetry off unless the user set it; offline when nothing is fetched.

    Datasets are always local files, so HF_DATASETS_OFFLINE is always safe; the hub is switched
    off when the base model is a local folder or already in the cache.
    """
    env = dict(base)
    if cpu and deepspeed:
        # ACCELERATE_USE_CPU makes the Trainer drop DeepSpeed (even when the user's shell exported
        # it); CPU ranks under DeepSpeed get their backend from lora.train.axolotl_cpu_ranks instead.
        env.pop("ACCELERATE_USE_CPU", None)
    elif cpu:
        # What `accelerate launch --cpu` sets for its child. Under torchrun it is what makes the
        # Trainer's accelerate state MULTI_CPU (gloo, sharded batches, rank-0-only saving); without
        # it every rank believes it is a lone process zero: each logs every step (and would save) and
        # the batches are not sharded.
        env["ACCELERATE_USE_CPU"] = "true"
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    if offline:
        env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `accelerate` must be the one installed beside this interpreter, activated venv or not
    bin_dir = str(Path(python_bin).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def model_available_offline(base_model: str, is_local: bool) -> bool:
    if is_local:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(base_model, "config.json"), str)
