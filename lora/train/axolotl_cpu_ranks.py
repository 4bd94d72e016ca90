"""axolotl's train CLI for multi-process CPU runs (gloo): what finetune.py launches for `--cpu-processes N>1`.

    torchrun --standalone --nproc_per_node 2 -m lora.train.axolotl_cpu_ranks recipes/sentiment_smollm2_cpu.yaml

Same arguments as `python -m axolotl.cli.train`; GPU runs never go through this module. Three
things stand between stock axolotl 0.19.0 / accelerate / DeepSpeed 0.18 and N CPU processes, each
measured here (docs/distributed.md has the logs' first lines):

1. axolotl's `normalize_config` sets `device_map={"": LOCAL_RANK}` whenever WORLD_SIZE > 1; transformers
   reads an integer as an accelerator index and every rank dies loading the model ("Cannot access
   accelerator device when none is available"). Here each rank's model is loaded on the CPU.
2. DeepSpeed only: accelerate's PartialState picks no backend on a machine with no accelerator unless it
   is told `cpu=True`, and `cpu=True` (ACCELERATE_USE_CPU) makes the Trainer drop DeepSpeed. With no
   backend it records one process, so the Trainer fills DeepSpeed's "auto" train_batch_size for world
   size 1 and DeepSpeed refuses it ("1 != 1 * 1 * 2"). Here the missing backend is gloo / MULTI_CPU,
   which is what DeepSpeed's own CPU accelerator already initialised.
3. DeepSpeed ZeRO-1/2 only: after the optimizer step DeepSpeed all-gathers the updated partitions into
   the flat parameter buffer with autograd recording; gloo implements that all-gather as in-place copies
   into split views, which autograd refuses ("Output 0 of Split is a view and is being modified
   inplace"). NCCL has a native kernel, so GPUs never see this. Here that all-gather runs under no_grad.
"""
from __future__ import annotations

import os


def cpu_device_map(cfg) -> None:
    """After axolotl's normalisation: a multi-process CPU run loads each rank's model on the CPU."""
    if (cfg.world_size or 1) > 1 and str(cfg.device or "cpu").startswith("cpu"):
        cfg.device_map = "cpu"


def cpu_backend(backend: str | None, distributed_type, env: dict[str, str] = os.environ):
    """accelerate's (backend, distributed type), with gloo / MULTI_CPU where it found none for a rank."""
    from accelerate.utils import DistributedType

    if backend is None and int(env.get("LOCAL_RANK", -1)) != -1:
        return "gloo", DistributedType.MULTI_CPU
    return backend, distributed_type


def patch() -> None:
    import accelerate.state
    import axolotl.cli.config as cli_config
    import torch

    normalize = cli_config.normalize_config  # load_cfg looks the name up in this module at call time

    def normalize_config(cfg):
        normalize(cfg)
        cpu_device_map(cfg)

    cli_config.normalize_config = normalize_config

    prepare_backend = accelerate.state.PartialState._prepare_backend

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        return cpu_backend(*prepare_backend(self, cpu, sagemaker_dp, backend))

    accelerate.state.PartialState._prepare_backend = _prepare_backend

    try:
        import deepspeed.runtime.utils as ds_utils
    except ImportError:  # plain DDP runs need no DeepSpeed
        return
    all_gather = ds_utils.all_gather_into_tensor_dp_groups  # all_gather_dp_groups calls it by module name

    def all_gather_into_tensor_dp_groups(*args, **kwargs):
        with torch.no_grad():
            return all_gather(*args, **kwargs)

    ds_utils.all_gather_into_tensor_dp_groups = all_gather_into_tensor_dp_groups


def main() -> None:
    import fire
    from axolotl.cli.train import do_cli

    patch()
    fire.Fire(do_cli)


if __name__ == "__main__":
    main()
