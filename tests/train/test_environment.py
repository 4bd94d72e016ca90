"""lora/train/environment.py: accelerate/torchrun argv, the child's environment, and real signal forwarding."""
from __future__ import annotations

import os
import signal
import sys
import threading

from lora.core.process import run_child
from lora.recipe.command import build_command
from lora.train.environment import child_environment

TAIL = ["--dynamo_backend", "no", "-m", "axolotl.cli.train"]

def test_argv_cpu():
    assert build_command("recipes/a.yaml", num_processes=1, cpu=True) == [
        "accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", *TAIL, "recipes/a.yaml"]


def test_argv_one_gpu():
    assert build_command("recipes/a.yaml", num_processes=1, cpu=False, mixed_precision="bf16") == [
        "accelerate", "launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "bf16", *TAIL, "recipes/a.yaml"]


def test_argv_four_gpus_plain_ddp():
    argv = build_command("recipes/a.yaml", num_processes=4, cpu=False, mixed_precision="bf16")
    assert argv[:7] == ["accelerate", "launch", "--num_processes", "4", "--num_machines", "1", "--multi_gpu"]


def test_argv_four_gpus_deepspeed():
    argv = build_command("recipes/a.yaml", num_processes=4, cpu=False, mixed_precision="bf16",
                         deepspeed_config="templates/deepspeed/zero2.json")
    assert argv == ["accelerate", "launch", "--num_processes", "4", "--num_machines", "1", "--use_deepspeed",
                    "--deepspeed_config_file", "templates/deepspeed/zero2.json", "--mixed_precision", "bf16",
                    *TAIL, "recipes/a.yaml"]


def test_argv_multi_node_deepspeed():
    argv = build_command("recipes/a.yaml", num_processes=4, cpu=False, num_machines=2, machine_rank=1,
                         main_process_ip="10.0.0.1", main_process_port=29500, mixed_precision="bf16",
                         deepspeed_config="templates/deepspeed/zero3.json")
    assert argv == ["accelerate", "launch", "--num_processes", "8", "--num_machines", "2", "--machine_rank", "1",
                    "--use_deepspeed", "--deepspeed_config_file", "templates/deepspeed/zero3.json",
                    "--deepspeed_multinode_launcher", "standard", "--main_process_ip", "10.0.0.1",
                    "--main_process_port", "29500", "--mixed_precision", "bf16", *TAIL, "recipes/a.yaml"]


def test_argv_cpu_processes_goes_through_torchrun():
    # accelerate's multi-CPU path is mpirun; torchrun starts the ranks and gloo connects them.
    assert build_command("recipes/a.yaml", num_processes=2, cpu=True, extra_axolotl_args=("--save_steps", "3")) == [
        "torchrun", "--standalone", "--nproc_per_node", "2", "-m", "lora.train.axolotl_cpu_ranks", "recipes/a.yaml",
        "--save_steps", "3"]


def test_cpu_rank_device_map():
    from axolotl.utils.dict import DictDefault

    from lora.train.axolotl_cpu_ranks import cpu_device_map

    two_cpu_ranks = DictDefault(world_size=2, device="cpu", device_map={"": 1})  # what axolotl 0.19 sets
    cpu_device_map(two_cpu_ranks)
    assert two_cpu_ranks.device_map == "cpu"
    one_rank, gpu_ranks = DictDefault(world_size=1, device="cpu", device_map="auto"), \
        DictDefault(world_size=2, device="cuda:1", device_map={"": 1})
    cpu_device_map(one_rank), cpu_device_map(gpu_ranks)
    assert one_rank.device_map == "auto" and gpu_ranks.device_map == {"": 1}


def test_cpu_rank_backend():
    from accelerate.utils import DistributedType

    from lora.train.axolotl_cpu_ranks import cpu_backend

    none = DistributedType.NO
    assert cpu_backend(None, none, {"LOCAL_RANK": "1"}) == ("gloo", DistributedType.MULTI_CPU)
    assert cpu_backend(None, none, {}) == (None, none)  # not launched as a rank: untouched
    assert cpu_backend("nccl", DistributedType.MULTI_GPU, {"LOCAL_RANK": "0"}) == ("nccl", DistributedType.MULTI_GPU)


def test_hub_model_not_cached_stays_online():
    env = child_environment({"PATH": "/usr/bin"}, offline=False)
    assert "HF_HUB_OFFLINE" not in env and env["HF_DATASETS_OFFLINE"] == "1"


def test_run_child_forwards_ctrl_c_to_the_child():
    """A real child: it exits 7 on SIGINT; we send SIGINT to ourselves as a terminal would."""
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    result = run_child([sys.executable, "-c", script], dict(os.environ))
    timer.cancel()
    assert result.returncode == 7 and result.interrupted_by == signal.SIGINT


def test_run_child_reports_death_by_signal_like_a_shell():
    result = run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], dict(os.environ))
    assert result.returncode == 128 + signal.SIGKILL and result.interrupted_by is None


def test_run_child_waits_for_workers_that_outlive_the_launcher(tmp_path):
    """accelerate may exit before its workers; run_child returns only when the whole group is gone."""
    import time as _time

    marker = tmp_path / "worker-done"
    worker = tmp_path / "worker.py"
    worker.write_text(f"import time, pathlib\ntime.sleep(2)\npathlib.Path({str(marker)!r}).write_text('x')\n")
    launcher = f"import subprocess, sys\nsubprocess.Popen([sys.executable, {str(worker)!r}])\n"
    t0 = _time.monotonic()
    result = run_child([sys.executable, "-c", launcher], dict(os.environ))
    assert result.returncode == 0 and marker.exists() and _time.monotonic() - t0 >= 1.5


