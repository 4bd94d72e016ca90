"""`python finetune.py <name>`: registry entry -> recipes/<name>.yaml -> accelerate launch.

    python finetune.py --list                               # entries, data present?, profile
    python finetune.py sentiment_smollm2_cpu --dry-run      # render + validate, print the command
    python finetune.py sentiment_smollm2_cpu                # train on this CPU (the demo)
    python finetune.py sentiment_llama_3_1_8b_8bits_r8      # train on a 4xA5000 pod
    python finetune.py --config-json ../FinLoRA/lora/finetune_configs.json sentiment_llama_3_1_8b_8bits_r8

Bad input (unknown run, bad key, bad data, no CUDA for a GPU recipe) is one line on stderr and exit
code 2, before anything is written. Otherwise the exit code is the training process's own.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from lora.datacheck import check_jsonl
from lora.fsutil import REPO_ROOT, adapter_weights, repo_relative, write_atomic
from lora.launch import build_command, child_environment, detect_cuda_gpus, model_available_offline, run_child
from lora.outputs import finish_record, plot_loss, start_record, training_finished
from lora.run_record import RunRecord
from lora.profiles import PROFILES
from lora.plan import checkpoint_interval_steps, format_plan
from lora.prompts import prompt_format_record
from lora.registry import Entry, Registry, UserError, is_local_model_ref, load_registry, parse_entry
from lora.runstate import RunLock, move_aside, resume_point
from lora.render import DEFAULT_ADAPTERS_DIR, DEFAULT_RECIPES_DIR, DEFAULT_REGISTRY, plan_recipe, render


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
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
    p.add_argument("--usd-per-gpu-hour", type=float, help="price for --plan (default: the profile's, $0.26 for an A5000)")
    p.add_argument("--fresh", action="store_true", help="start over: move the old output folder aside (never deleted)")
    p.add_argument("--zero", type=int, choices=(1, 2, 3), help="DeepSpeed ZeRO stage (overrides the entry)")
    p.add_argument("--gpus", type=int, help="GPUs to use on this machine (default: all visible)")
    p.add_argument("--cpu-processes", type=int, default=1,
                   help="cpu entries: training processes on this machine (torchrun, gloo; default 1)")
    p.add_argument("--num-machines", type=int, default=1, help="machines in a multi-node run")
    p.add_argument("--machine-rank", type=int, help="this machine's rank (0 = main) in a multi-node run")
    p.add_argument("--main-process-ip", help="IP of the rank-0 machine in a multi-node run")
    p.add_argument("--main-process-port", type=int, help="port on the rank-0 machine (default 29500)")
    p.add_argument("--recipes-dir", type=Path, default=DEFAULT_RECIPES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--adapters-dir", type=Path, default=DEFAULT_ADAPTERS_DIR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_name and args.name and args.run_name != args.name:
        p.error("give the run name once (positional or --run_name)")
    args.name = args.name or args.run_name
    if not args.list and not args.name:
        p.error("a run name is required (see --list)")
    return args


# ---------------------------------------------------------------- list

def data_status(registry: Registry, entry: Entry) -> str:
    paths = [registry.resolve_path(entry.dataset_path)] + [registry.resolve_path(d.path) for d in entry.extra_datasets]
    missing = [repo_relative(p) for p in paths if not p.is_file()]
    return "yes" if not missing else "MISSING " + ", ".join(missing)


def format_list(registry: Registry) -> str:
    headers = ("name", "base model", "quant", "r", "variant", "profile", "prompt", "data present?")
    rows = []
    for name, e in registry.entries.items():
        quant = "16-bit" if e.quant_bits == 16 else f"{e.quant_bits}-bit"
        rows.append((name, e.base_model, quant, str(e.lora_r), e.variant, e.profile, e.prompt_format,
                     data_status(registry, e)))
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    out.append(f"{len(rows)} entries in {repo_relative(registry.path)}; "
               "entries with MISSING data refuse to launch until the file is there (see data/README.md)")
    return "\n".join(out)


# ---------------------------------------------------------------- checks

def dataset_paths(registry: Registry, entry: Entry) -> list[Path]:
    return [registry.resolve_path(entry.dataset_path)] + [registry.resolve_path(d.path) for d in entry.extra_datasets]


def check_datasets(registry: Registry, name: str, entry: Entry, *, allow_missing: bool) -> list[str]:
    """Validate every dataset; return notes for missing files when allowed (dry-run), else raise."""
    notes = []
    for path in dataset_paths(registry, entry):
        if not path.exists():
            hint = (f"dataset {repo_relative(path)} of {name!r} is not in this repository; "
                    f"put the JSONL there (FinLoRA publishes its training files under data/train/)")
            if allow_missing:
                notes.append(f"note: {hint}; a real launch refuses until then")
                continue
            raise UserError(hint)
        check_jsonl(path)
    return notes


def ensure_base_model_present(registry: Registry, entry: Entry, *, convert: bool) -> list[str]:
    if not is_local_model_ref(entry.base_model):
        return []
    path = Path(registry.resolve_base_model(entry))
    if (path / "config.json").is_file():
        return []
    from lora.base_model import BUNDLED_MODEL_DIR, BundledModelMissing, ensure_base_model

    if path == BUNDLED_MODEL_DIR.resolve():
        if not convert:
            return [f"note: the bundled base model is converted into {repo_relative(path)} at launch"]
        try:
            ensure_base_model(path)
        except BundledModelMissing as exc:
            raise UserError(str(exc)) from None
        return []
    raise UserError(f"base_model {entry.base_model!r}: no config.json in {path}; "
                    "give a model folder or a hub id such as meta-llama/Llama-3.1-8B-Instruct")


def validate_with_axolotl(recipe_text: str, entry: Entry) -> None:
    """Run axolotl's own schema validation on the rendered recipe, with the profile's capabilities."""
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    profile = PROFILES[entry.profile]
    gpu = profile.accelerator == "cuda"
    capabilities = {"bf16": profile.bf16, "n_gpu": max(1, profile.num_gpus), "fp8": False,
                    "compute_capability": "sm_86" if gpu else None}
    import torch

    env_capabilities = {"torch_version": torch.__version__.split("+")[0]}
    try:
        validate_config(DictDefault(yaml.safe_load(recipe_text)), capabilities=capabilities,
                        env_capabilities=env_capabilities)
    except Exception as exc:  # axolotl raises ValueError / pydantic errors; one line for the user
        first = str(exc).strip().splitlines()
        raise UserError(f"axolotl rejects the rendered recipe: {' '.join(first[:3])}") from None


# ---------------------------------------------------------------- launch

def resolve_gpus(requested: int | None, found: int) -> int:
    if requested is not None:
        if requested < 1:
            raise UserError(f"--gpus {requested}: give at least 1")
        if requested > found:
            raise UserError(f"--gpus {requested}: only {found} CUDA GPU(s) found on this machine")
        return requested
    return found


def check_cpu_processes(args: argparse.Namespace, accelerator: str) -> None:
    if args.cpu_processes < 1:
        raise UserError(f"--cpu-processes {args.cpu_processes}: give at least 1")
    if accelerator == "cpu":
        if args.gpus is not None:
            raise UserError("--gpus is for GPU profiles; a cpu entry takes --cpu-processes N")
        if args.num_machines > 1:
            raise UserError("--num-machines: multi-node runs are for GPU profiles; a cpu entry runs on one machine")
        cores = os.cpu_count() or 1
        if args.cpu_processes > cores:
            raise UserError(f"--cpu-processes {args.cpu_processes}: this machine has {cores} CPU core(s)")
    elif args.cpu_processes != 1:
        raise UserError(f"--cpu-processes is for cpu entries; {args.name!r} is a GPU recipe: use --gpus N")


def check_cpu_zero(entry: Entry, cpu_processes: int) -> None:
    stage = entry.zero_stage_resolved
    if PROFILES[entry.profile].accelerator == "cpu" and stage is not None and cpu_processes < 2:
        raise UserError(f"zero_stage {stage} on a cpu entry shards across processes: add --cpu-processes 2 "
                        "(or more), or remove zero_stage / --zero")


def check_multinode(args: argparse.Namespace) -> None:
    if args.num_machines < 1:
        raise UserError(f"--num-machines {args.num_machines}: give at least 1")
    if args.num_machines > 1 or args.machine_rank is not None:
        if args.machine_rank is None:
            raise UserError("--num-machines > 1 needs --machine-rank (0 on the main machine)")
        if not args.main_process_ip:
            raise UserError("--machine-rank needs --main-process-ip (the rank-0 machine's address)")
        if not 0 <= args.machine_rank < args.num_machines:
            raise UserError(f"--machine-rank {args.machine_rank}: must be below --num-machines {args.num_machines}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _main(args: argparse.Namespace) -> int:
    registry = load_registry(args.config_json)
    if args.list:
        print(format_list(registry))
        return 0
    name = args.name
    entry = registry.get(name)
    if args.zero is not None:
        entry = parse_entry(name, {**entry.model_dump(exclude_unset=True), "zero_stage": args.zero})
        registry.entries[name] = entry
    profile = PROFILES[entry.profile]
    check_cpu_processes(args, profile.accelerator)
    check_multinode(args)
    check_cpu_zero(entry, args.cpu_processes)
    if args.plan:
        return print_plan(registry, entry, args)

    notes = check_datasets(registry, name, entry, allow_missing=args.dry_run)
    notes += ensure_base_model_present(registry, entry, convert=not args.dry_run)

    gpus = 0
    if profile.accelerator == "cuda" and not args.dry_run:
        found = detect_cuda_gpus()
        if found == 0:
            raise UserError(f"{name!r} is a GPU recipe (profile {profile.name}) and this machine has no CUDA GPU; "
                            f"check it with --dry-run, or train a cpu entry such as sentiment_smollm2_cpu")
        gpus = resolve_gpus(args.gpus, found)
    elif profile.accelerator == "cuda":
        gpus = args.gpus or profile.num_gpus
    else:
        gpus = args.cpu_processes  # workers, one per process: the planner and argv count them like GPUs

    inputs = plan_recipe(registry, name, recipes_dir=args.recipes_dir, adapters_dir=args.adapters_dir)
    text = render(inputs)
    if args.dry_run:
        validate_with_axolotl(text, entry)
    recipe_path = args.recipes_dir / f"{name}.yaml"
    recipe_ref = repo_relative(recipe_path)
    argv = build_command(
        recipe_ref,
        num_processes=gpus or 1,
        cpu=profile.accelerator == "cpu",
        deepspeed_config=inputs.deepspeed_config,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank or 0,
        main_process_ip=args.main_process_ip,
        main_process_port=args.main_process_port,
        mixed_precision="bf16" if profile.bf16 else "no",
    )
    write_atomic(recipe_path, text)
    for note in notes:
        print(note, file=sys.stderr)
    if args.dry_run:
        print(f"recipe: {recipe_ref} (validated by axolotl)")
        print(f"command: {shlex.join(argv)}")
        return 0

    output_dir = args.adapters_dir / name
    if args.fresh:
        moved = move_aside(output_dir)
        if moved:
            print(f"--fresh: moved the old {repo_relative(output_dir)} to {repo_relative(moved)}", file=sys.stderr)
    previous = RunRecord.read(output_dir)
    if previous and previous.status == "complete" and adapter_weights(output_dir):
        print(f"{name}: already trained ({repo_relative(output_dir)}, finished {previous.ended_at}); "
              "nothing to do (--fresh retrains, keeping the old folder)")
        return 0
    if previous and previous.recipe not in (None, text):
        raise UserError(f"{repo_relative(output_dir)} holds a run of a different recipe (the entry changed since); "
                        "--fresh moves it aside and starts over")

    plan = plan_or_none(registry, entry, gpus or 1, args.num_machines)
    extra: list[str] = []
    if plan is not None:
        print(format_plan(plan), file=sys.stderr)
        if plan.seconds:  # a lost pod costs at most ~30 min of work: axolotl CLI overrides
            extra += ["--save_steps", str(checkpoint_interval_steps(plan, minutes=30))]
            if inputs.saves_per_epoch:  # the two are exclusive in axolotl; 0 switches the recipe's off
                extra += ["--saves_per_epoch", "0"]
    with RunLock(output_dir):
        resume = resume_point(output_dir)
        if resume is not None:
            print(f"resuming from {repo_relative(resume)} (step {resume.name.split('-')[-1]}); "
                  "--fresh starts over", file=sys.stderr)
            extra += ["--resume_from_checkpoint", repo_relative(resume)]
        argv = argv + extra
        return launch(name, entry, registry, inputs, text, recipe_ref, argv, output_dir, resume)


def launch(name, entry, registry, inputs, text, recipe_ref, argv, output_dir, resume) -> int:
    profile = PROFILES[entry.profile]
    offline = model_available_offline(entry.base_model, is_local_model_ref(entry.base_model))
    env = child_environment(dict(os.environ), offline=offline, cpu=profile.accelerator == "cpu",
                            deepspeed=inputs.deepspeed_config is not None)
    record = start_record(
        name=name, entry=entry.model_dump(mode="json"), recipe_path=recipe_ref, recipe_text=text,
        prompt_format=prompt_format_record(entry.prompt_format), base_model=inputs.base_model,
        datasets=dataset_paths(registry, entry), command=argv, profile=profile.name,
        resumed_from=repo_relative(resume) if resume else None, output_dir=output_dir,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write(output_dir)
    print(f"launching: {shlex.join(argv)}", file=sys.stderr, flush=True)
    result = run_child(argv, env, cwd=REPO_ROOT)
    if result.interrupted_by is not None:
        status, code = "interrupted", result.returncode or 128 + result.interrupted_by
    elif result.returncode == 0 and adapter_weights(output_dir) and training_finished(output_dir):
        status, code = "complete", 0
    else:
        status, code = "failed", result.returncode or 1
    finish_record(record, status=status, exit_code=code, output_dir=output_dir).write(output_dir)
    plot_loss(output_dir, title=f"{name} ({entry.variant}, {profile.name})")
    where = repo_relative(output_dir)
    if status == "complete":
        print(f"adapter: {where} (run.json, loss.png beside it)", file=sys.stderr)
    else:
        print(f"training {status} (exit code {code}); {where} is not a finished adapter; "
              "run the same command again to resume from its last checkpoint", file=sys.stderr)
    return code


# ---------------------------------------------------------------- plan

def build_plan(registry: Registry, entry: Entry, num_gpus: int, num_machines: int = 1,
               usd_per_gpu_hour: float | None = None):
    from lora.plan import count_tokens, estimate, inputs_from_profile, load_arch

    profile = PROFILES[entry.profile]
    base = registry.resolve_base_model(entry)
    arch = load_arch(base, REPO_ROOT)
    dataset = registry.resolve_path(entry.dataset_path)
    if not dataset.is_file():
        raise UserError(f"--plan needs the dataset to count its rows and tokens: {repo_relative(dataset)} is missing")
    tokens = count_tokens(dataset, base, REPO_ROOT)
    overrides = dict(
        base_model=base, quant_bits=entry.quant_bits if profile.accelerator == "cuda" or entry.quant_bits < 16 else 32,
        lora_r=entry.lora_r, target_modules=entry.target_modules, use_dora=entry.peft_use_dora,
        lora_dropout=entry.lora_dropout, micro_batch_size=entry.batch_size,
        gradient_accumulation_steps=entry.gradient_accumulation_steps, sequence_len=entry.sequence_len,
        num_epochs=entry.num_epochs, max_steps=entry.max_steps, sample_packing=entry.sample_packing_resolved,
        zero_stage=entry.zero_stage_resolved, num_gpus=max(1, num_gpus), num_machines=num_machines,
    )
    if usd_per_gpu_hour is not None:
        overrides["usd_per_gpu_hour"] = usd_per_gpu_hour
    return estimate(inputs_from_profile(profile, tokens=tokens, **overrides), arch)


def plan_or_none(registry: Registry, entry: Entry, num_gpus: int, num_machines: int):
    from lora.plan import MissingFacts

    try:
        return build_plan(registry, entry, num_gpus, num_machines)
    except (MissingFacts, UserError) as exc:
        print(f"note: no plan for this launch: {exc}", file=sys.stderr)
        return None


def print_plan(registry: Registry, entry: Entry, args: argparse.Namespace) -> int:
    from lora.plan import MissingFacts, format_plan, plan_to_json

    profile = PROFILES[entry.profile]
    try:
        workers = args.cpu_processes if profile.accelerator == "cpu" else args.gpus or max(1, profile.num_gpus)
        plan = build_plan(registry, entry, workers, args.num_machines,
                          args.usd_per_gpu_hour)
    except MissingFacts as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(plan_to_json(plan), indent=2))
    else:
        print(format_plan(plan))
    return 0
