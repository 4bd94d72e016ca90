"""`python finetune.py <name>`: registry entry -> recipes/<name>.yaml -> accelerate launch.

    python finetune.py --list                               # entries, data present?, profile, last run
    python finetune.py sentiment_smollm2_cpu --dry-run      # render + validate, print the command
    python finetune.py sentiment_smollm2_cpu                # train on this CPU (the demo)
    python finetune.py sentiment_llama_3_1_8b_8bits_r8      # train on a 4xA5000 pod
    python finetune.py sentiment_llama_3_1_8b_8bits_r8 --profile h100x1 --plan   # on another profile
    python finetune.py sentiment_llama_3_1_8b_8bits_r8 --check   # pre-flight this machine (docs/pods.md)
    python finetune.py --config-json ../FinLoRA/lora/finetune_configs.json sentiment_llama_3_1_8b_8bits_r8

    python finetune.py formula_llama_3_1_8b_8bits_r8 --sky --bucket my-adapters --down   # on a rented GPU
    python finetune.py --queue a b c --on-finish sudo shutdown -h now    # a queue (docs/queue.md)
    python finetune.py sentiment_smollm2_cpu --sweep lora_r=4,8 --dry-run   # a sweep's plans

One function per mode (list, plan, check, dry-run, train, sky; queues and sweeps in lora/queue.py);
lora/launch_plan.py decides and executes a launch.
Bad input (unknown run, bad key, bad data, no CUDA for a GPU recipe, bad flags) is one line on stderr
and exit code 2, before anything is written. Otherwise the exit code is the training process's own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path

from lora import queue, queue_cli, sky
from lora.errors import OneLineParser, UserError
from lora.fsutil import repo_relative
from lora.launch_plan import (
    LaunchRequest,
    check_request,
    decide,
    entry_for,
    execute,
    gather_facts,
    missing_datasets,
    preflight,
    write_recipe,
)
from lora.precision import REQUESTS
from lora.preflight import gather_gpus, require
from lora.profiles import AUTO, PROFILES, profile_from_gpus, profile_named, use_detected
from lora.registry import Registry, load_registry
from lora.render import DEFAULT_ADAPTERS_DIR, DEFAULT_RECIPES_DIR, DEFAULT_REGISTRY, validate_with_axolotl
from lora.runstate import RunLock

FLAG_RANGES = {  # flag: (attribute, lowest, highest)
    "--gpus": ("gpus", 1, 1024),
    "--cpu-processes": ("cpu_processes", 1, 1024),
    "--num-machines": ("num_machines", 1, 4096),
    "--machine-rank": ("machine_rank", 0, 4095),
    "--main-process-port": ("main_process_port", 1, 65535),
}


def check_flags(args: argparse.Namespace) -> None:
    """Numbers argparse accepted as ints or floats but that mean nothing (a port of 70000, $nan)."""
    for flag, (attr, low, high) in FLAG_RANGES.items():
        value = getattr(args, attr)
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: give at least {low}")
        if value is not None and value > high:
            raise UserError(f"{flag} {value}: give at most {high}")
    price = args.usd_per_gpu_hour
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise UserError(f"--usd-per-gpu-hour {price}: give a price of 0 or more, in US dollars")


SKY_ONLY = ("cloud", "spot", "bucket", "store", "volume", "down")


def check_sky_flags(args: argparse.Namespace) -> None:
    if not args.sky:
        given = [f"--{a}" for a in SKY_ONLY if getattr(args, a) not in (None, False)]
        if given:
            raise UserError(f"{given[0]} is a --sky flag: add --sky (docs/cloud.md)")
    elif args.machine_rank is not None or args.main_process_ip or args.main_process_port:
        raise UserError("--sky takes --num-machines and --gpus; SkyPilot supplies each machine's rank and the "
                        "main machine's address (docs/cloud.md)")
    elif args.precision != "auto":
        raise UserError("--precision is for cpu entries; --sky trains a GPU profile in its own precision")
    elif args.plan or args.list or args.fresh:
        raise UserError("--sky launches on a rented machine; --plan, --list and --fresh are commands of their own")
    elif args.check:
        raise UserError("--check reads this machine; the rented one runs it before training (every GPU launch does)")
    elif args.profile is not None:
        raise UserError("--sky rents the entry's profile; set \"profile\" in the entry to rent another")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="finetune.py",
        description="Render a registry entry into an Axolotl recipe and train it with accelerate.",
    )
    p.add_argument("name", nargs="?", help="run name from the registry (see --list)")
    p.add_argument("--run_name", "--run-name", dest="run_name", help=argparse.SUPPRESS)  # FinLoRA's old flag
    p.add_argument("--config-json", "--config", dest="config_json", type=Path, default=DEFAULT_REGISTRY,
                   help="registry file (default: finetune_configs.json); FinLoRA's files work unchanged")
    p.add_argument("--list", action="store_true", help="list the entries and exit")
    p.add_argument("--dry-run", action="store_true", help="render and validate; print the command; launch nothing")
    p.add_argument("--plan", action="store_true", help="memory/time/cost estimate for the entry's profile; no launch")
    p.add_argument("--json", action="store_true", help="with --plan: one JSON object")
    p.add_argument("--check", action="store_true",
                   help="pre-flight: driver, GPUs, memory, bitsandbytes, attention, disk, model, token, output "
                        "folder; exit 2 on a failure (every GPU launch runs it first)")
    p.add_argument("--profile", help="hardware profile for this launch instead of the entry's (see docs/pods.md); "
                                     "`auto`: this machine's GPUs")
    p.add_argument("--usd-per-gpu-hour", type=float,
                   help="price for --plan (default: the profile's, $0.26 for an A5000)")
    p.add_argument("--precision", choices=REQUESTS, default="auto",
                   help="cpu entries: bf16 where the CPU has bf16 matmuls (AMX/AVX512-BF16), else fp32 (default auto; "
                        "lora/precision.py)")
    p.add_argument("--fresh", action="store_true", help="start over: move the old output folder aside (never deleted)")
    p.add_argument("--zero", type=int, choices=(1, 2, 3), help="DeepSpeed ZeRO stage (overrides the entry)")
    p.add_argument("--gpus", type=int, help="GPUs to use on this machine (default: all visible)")
    p.add_argument("--cpu-processes", type=int, default=1,
                   help="cpu entries: training processes on this machine (torchrun, gloo; default 1)")
    p.add_argument("--num-machines", type=int, default=1, help="machines in a multi-node run")
    p.add_argument("--machine-rank", type=int, help="this machine's rank (0 = main) in a multi-node run")
    p.add_argument("--main-process-ip", help="IP of the rank-0 machine in a multi-node run")
    p.add_argument("--main-process-port", type=int, help="port on the rank-0 machine (default 29500)")
    rented = p.add_argument_group("rented GPUs through SkyPilot (docs/cloud.md)")
    rented.add_argument("--sky", action="store_true",
                        help="write recipes/<name>.sky.yaml and launch it with SkyPilot (with --dry-run: write only)")
    rented.add_argument("--cloud", help="with --sky: runpod, lambda, vast, aws, gcp, azure, kubernetes, … "
                                        "(SkyPilot's infra, cloud[/region]; default: the cheapest it finds)")
    rented.add_argument("--spot", action="store_true",
                        help="with --sky: a managed spot job (preemption: new machine, same command, resumes)")
    rented.add_argument("--bucket", help="with --sky: bucket that keeps the adapters and checkpoints")
    rented.add_argument("--store", choices=sky.STORES, help="with --bucket: its object store (default: the cloud's)")
    rented.add_argument("--volume", help="with --sky: SkyPilot volume that keeps the adapters (instead of --bucket)")
    rented.add_argument("--down", action="store_true",
                        help="with --sky: delete the machine when training ends (default: after 30 idle minutes, "
                             "deleted with --bucket/--volume, else stopped with its disk)")
    queue_cli.add_flags(p)
    p.add_argument("--recipes-dir", type=Path, default=DEFAULT_RECIPES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--adapters-dir", type=Path, default=DEFAULT_ADAPTERS_DIR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_flags(args)
    check_sky_flags(args)
    if args.run_name and args.name and args.run_name != args.name:
        p.error("give the run name once (positional or --run_name)")
    args.name = args.name or args.run_name
    queue_cli.check_flags(args)
    if not args.list and not args.name and not queue_cli.queue_mode(args):
        p.error("a run name is required (see --list)")
    return args


def request_from_args(args: argparse.Namespace) -> LaunchRequest:
    return LaunchRequest(
        name=args.name, zero=args.zero, profile=args.profile, gpus=args.gpus, cpu_processes=args.cpu_processes,
        num_machines=args.num_machines, machine_rank=args.machine_rank, main_process_ip=args.main_process_ip,
        main_process_port=args.main_process_port, fresh=args.fresh, dry_run=args.dry_run, precision=args.precision,
        recipes_dir=args.recipes_dir, adapters_dir=args.adapters_dir,
    )


# ---------------------------------------------------------------- the four modes


def list_mode(registry: Registry, adapters_dir: Path = DEFAULT_ADAPTERS_DIR) -> int:
    print(format_list(registry, adapters_dir))
    return 0


def plan_mode(registry: Registry, request: LaunchRequest, as_json: bool, usd_per_gpu_hour: float | None) -> int:
    from lora.plan import MissingFacts, format_plan, plan_for_entry, plan_to_json

    entry = entry_for(registry, request)
    check_request(request, entry)
    profile = PROFILES[entry.profile]
    workers = request.cpu_processes if profile.accelerator == "cpu" else request.gpus or max(1, profile.num_gpus)
    try:
        plan = plan_for_entry(registry, entry, num_gpus=workers, num_machines=request.num_machines,
                              usd_per_gpu_hour=usd_per_gpu_hour)
    except MissingFacts as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(plan_to_json(plan), indent=2) if as_json else format_plan(plan))
    return 0


def check_mode(registry: Registry, request: LaunchRequest) -> int:
    entry = entry_for(registry, request)
    check_request(request, entry)
    findings, _, _ = preflight(registry, request, entry)
    print(f"pre-flight of {request.name} on profile {entry.profile} ({PROFILES[entry.profile].description}):")
    for finding in findings:
        print(finding.line())
    require(findings)
    return 0


def resolve_profile_flag(name: str | None) -> None:
    """--profile NAME must name a profile; --profile auto builds one from this machine's GPUs."""
    if name == AUTO:
        use_detected(profile_from_gpus(gather_gpus()))
    elif name is not None:
        profile_named(name)


def dry_run_mode(registry: Registry, request: LaunchRequest) -> int:
    entry = entry_for(registry, request)
    check_request(request, entry)
    plan = decide(request, registry, entry, gather_facts(registry, request, entry))
    validate_with_axolotl(plan.recipe_text, entry)
    write_recipe(plan)
    print(f"recipe: {plan.recipe_ref} (validated by axolotl)")
    print(f"command: {shlex.join(plan.argv)}")
    return 0


def train_mode(registry: Registry, request: LaunchRequest) -> int:
    entry = entry_for(registry, request)
    check_request(request, entry)
    # The lock comes first: nothing is read, moved or written for this name while another launch runs.
    with RunLock(request.adapters_dir, request.name) as lock:
        plan = decide(request, registry, entry, gather_facts(registry, request, entry))
        return execute(plan, lock)


def sky_mode(registry: Registry, request: LaunchRequest, args: argparse.Namespace) -> int:
    """Everything is checked before the task file is written; a launch needs SkyPilot, a dry run does not."""
    entry = entry_for(registry, request)
    sky_request = sky.SkyRequest(
        name=request.name, cloud=args.cloud, spot=args.spot, num_machines=args.num_machines, gpus=args.gpus,
        zero=args.zero, down=args.down, bucket=args.bucket, store=args.store, volume=args.volume, dry_run=args.dry_run,
        config_json=args.config_json, recipes_dir=args.recipes_dir,
    )
    task = sky.sky_inputs(registry, entry, sky_request, dict(os.environ))
    executable = None if args.dry_run else sky.find_sky()
    return sky.launch(task, executable, dict(os.environ))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        registry = load_registry(args.config_json)
        if args.list:
            return list_mode(registry, args.adapters_dir)
        if queue_cli.queue_mode(args):
            return queue.main(registry, queue_cli.queue_options(args, argv))
        request = request_from_args(args)
        if args.sky:
            return sky_mode(registry, request, args)
        resolve_profile_flag(args.profile)
        if args.plan:
            return plan_mode(registry, request, args.json, args.usd_per_gpu_hour)
        if args.check:
            return check_mode(registry, request)
        if args.dry_run:
            return dry_run_mode(registry, request)
        return train_mode(registry, request)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


# ---------------------------------------------------------------- --list


def data_status(registry: Registry, name: str) -> str:
    missing = missing_datasets(registry, registry.get(name))
    return "yes" if not missing else "MISSING " + ", ".join(missing)


def last_run(adapters_dir: Path, name: str) -> str:
    """The run.json in lora_adapters/NAME: its status and what it used (wall time, peak RSS; lora/compute.py)."""
    from lora.compute import short
    from lora.run_record import RunRecord

    try:
        record = RunRecord.read(adapters_dir / name)
    except UserError:
        return "unreadable run.json"
    if record is None:
        return "–"
    if record.compute is None:  # a run.json from before compute tracking, or a run still going
        return record.status
    train = next((p for p in record.compute.phases if p.name == "train"), record.compute.total)
    return f"{record.status} {short(train)}"


def format_list(registry: Registry, adapters_dir: Path = DEFAULT_ADAPTERS_DIR) -> str:
    headers = ("name", "base model", "quant", "r", "variant", "profile", "prompt", "last run", "data present?")
    rows = []
    for name, e in registry.entries.items():
        quant = "16-bit" if e.quant_bits == 16 else f"{e.quant_bits}-bit"
        rows.append((name, e.base_model, quant, str(e.lora_r), e.variant, e.profile, e.resolved.prompt_format,
                     last_run(adapters_dir, name), data_status(registry, name)))
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    out.append(f"{len(rows)} entries in {repo_relative(registry.path)}; "
               "entries with MISSING data refuse to launch until the file is there (see data/README.md); "
               f"last run: {repo_relative(adapters_dir)}/NAME/run.json status, training wall time, peak RSS")
    return "\n".join(out)
