"""The command that trains a recipe: `accelerate launch … -m axolotl.cli.train recipes/<name>.yaml` as an argv.

    finlora train sentiment_smollm2_cpu --dry-run   # prints it: accelerate launch --cpu …

Pure: the recipe header documents it (lora/recipe/render.py) and the launch runs it (lora/train/launch.py).
"""
from __future__ import annotations


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
                "-m", "lora.train.axolotl_cpu_ranks", recipe_path, *extra_axolotl_args]
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
