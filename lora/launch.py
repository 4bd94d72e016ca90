"""Launch: the accelerate argv, the child's environment, and running it with signals forwarded.

    python finetune.py sentiment_smollm2_cpu            # CPU demo: accelerate launch --cpu …
    python finetune.py sentiment_llama_3_1_8b_8bits_r8  # pod: accelerate launch --num_processes 4 …

`build_command` and `child_environment` are pure; `run_child` is the only place a process starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lora.fsutil import REPO_ROOT

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Never copied into anything we write (run.json, recipes, logs); the child still inherits them so
# gated hub models can download on a pod.
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")


def build_command(
    recipe_path: str,
    *,
    num_processes: int,
    cpu: bool,
    deepspeed_config: str | None = None,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    mixed_precision: str | None = None,
    extra_axolotl_args: tuple[str, ...] = (),
) -> list[str]:
    """accelerate launch [flags] -m axolotl.cli.train <recipe> — an argv list, never a shell string.

    num_processes is per machine (GPUs on this machine); accelerate wants the total. On the CPU,
    num_processes > 1 goes through torchrun instead: accelerate's multi-CPU path is mpirun with a
    hostfile, and `accelerate launch --cpu --num_processes 2` silently starts one process.
    """
    if cpu and num_processes > 1:
        if num_machines > 1:
            raise ValueError("multi-process CPU runs are single-machine")
        return ["torchrun", "--standalone", "--nproc_per_node", str(num_processes),
                "-m", "lora.axolotl_cpu_ranks", recipe_path, *extra_axolotl_args]
    argv = ["accelerate", "launch"]
    if cpu:
        argv += ["--cpu", "--num_processes", "1", "--num_machines", "1"]
    else:
        total = num_processes * num_machines
        argv += ["--num_processes", str(total), "--num_machines", str(num_machines)]
        if num_machines > 1:
            argv += ["--machine_rank", str(machine_rank)]
        if deepspeed_config:
            argv += ["--use_deepspeed", "--deepspeed_config_file", deepspeed_config]
            if num_machines > 1:
                # accelerate's default multi-node DeepSpeed launcher is pdsh over ssh; "standard"
                # runs like torchrun, one `finetune.py` per node, which is how pods are driven.
                argv += ["--deepspeed_multinode_launcher", "standard"]
        elif total > 1:
            argv += ["--multi_gpu"]
    if main_process_ip:
        argv += ["--main_process_ip", main_process_ip]
    if main_process_port:
        argv += ["--main_process_port", str(main_process_port)]
    argv += ["--mixed_precision", mixed_precision or "no", "--dynamo_backend", "no"]
    argv += ["-m", "axolotl.cli.train", recipe_path, *extra_axolotl_args]
    return argv


def child_environment(base: dict[str, str], *, offline: bool, cpu: bool = False, deepspeed: bool = False,
                      python_bin: str = sys.executable) -> dict[str, str]:
    """The child's environment: telemetry off unless the user set it; offline when nothing is fetched.

    Datasets are always local files, so HF_DATASETS_OFFLINE is always safe; the hub is switched
    off when the base model is a local folder or already in the cache.
    """
    env = dict(base)
    if cpu and deepspeed:
        # ACCELERATE_USE_CPU makes the Trainer drop DeepSpeed (even when the user's shell exported
        # it); CPU ranks under DeepSpeed get their backend from lora.axolotl_cpu_ranks instead.
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


def detect_cuda_gpus() -> int:
    """GPUs torch can use here (honours CUDA_VISIBLE_DEVICES); 0 on a CPU-only machine."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


GROUP_GRACE_SECONDS = 180.0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_group(pgid: int, grace_seconds: float, poll: float = 0.2) -> None:
    """Wait for every process of the group to exit; past the grace period, SIGTERM then SIGKILL it."""
    deadline = time.monotonic() + grace_seconds
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(poll)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while group_alive(pgid) and time.monotonic() < end:
            time.sleep(poll)


class ChildResult:
    def __init__(self, returncode: int, interrupted_by: int | None):
        self.returncode = returncode
        self.interrupted_by = interrupted_by  # the signal we forwarded, if any


def run_child(argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT,
              on_start: Callable[[int], None] | None = None) -> ChildResult:
    """Run the launcher in its own process group; forward Ctrl-C / SIGTERM to the whole group.

    A group of its own means a terminal Ctrl-C reaches only us, and we pass it on exactly once to
    accelerate and every worker it started (axolotl saves the adapter on SIGINT and exits 0, so the
    caller must know the run was interrupted rather than finished).
    """
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
    if on_start is not None:
        on_start(proc.pid)  # its process group id: the lock's record of who is training
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = proc.wait()
        # accelerate can exit before its workers (measured: on Ctrl-C it returned while axolotl was
        # still saving the adapter); the run is over only when the whole group is gone.
        wait_for_group(proc.pid, grace_seconds=GROUP_GRACE_SECONDS)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if returncode < 0:  # killed by a signal: report it the way a shell does
        returncode = 128 - returncode
    return ChildResult(returncode, received[0] if received else None)
