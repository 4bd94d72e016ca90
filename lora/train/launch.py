"""Decide, then do: one `python finetune.py <name>` launch as a LaunchPlan, then its execution.

    python finetune.py sentiment_smollm2_cpu --dry-run   # decide, write the recipe, print the command
    python finetune.py sentiment_smollm2_cpu             # under the run's lock: gather facts, decide, execute

`gather_facts` is the only place that looks at the machine and the output folder; `decide` is pure
(facts in, plan out: recipe text, argv, environment, output folder, resume point, estimate);
`execute` carries a plan out and is the only place that moves folders or starts a process.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.base_model import BUNDLED_MODEL_DIR, BundledModelMissing, ensure_base_model
from lora.core.compute import Sampler
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, adapter_weights, repo_relative, write_atomic
from lora.core.precision import CpuFacts, Precision, choose, cpu_bf16_blocker, cpu_facts
from lora.core.process import run_child
from lora.core.prompts import prompt_format_record
from lora.core.run_record import PrecisionRecord, RunRecord, portable_path
from lora.estimate import MissingFacts, Plan, checkpoint_interval_steps, format_plan, load_arch, plan_for_entry
from lora.recipe.command import build_command
from lora.recipe.datacheck import check_jsonl
from lora.recipe.profiles import PROFILES, HardwareProfile, attention_for
from lora.recipe.registry import Entry, Registry, is_local_model_ref, parse_entry
from lora.recipe.render import DEFAULT_ADAPTERS_DIR, DEFAULT_RECIPES_DIR, RecipeInputs, recipe_inputs, render
from lora.train.environment import child_environment, model_available_offline
from lora.train.lock import RunLock, move_aside, resume_point
from lora.train.outputs import checkpoint_step, finish_record, plot_loss, start_record, training_finished
from lora.train.preflight import Finding, MachineFacts, gather, needs_for, require, run_checks

COMPUTE_INTERVAL = 1.0  # seconds between samples of the training child (run.json "compute")


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for (the CLI's flags, typed)."""

    name: str
    zero: int | None = None
    profile: str | None = None  # --profile: another hardware profile for this launch (the entry is unchanged)
    gpus: int | None = None
    cpu_processes: int = 1
    num_machines: int = 1
    machine_rank: int | None = None
    main_process_ip: str | None = None
    main_process_port: int | None = None
    fresh: bool = False
    dry_run: bool = False
    precision: str = "auto"  # --precision: auto, fp32, bf16 (cpu entries)
    recipes_dir: Path = DEFAULT_RECIPES_DIR
    adapters_dir: Path = DEFAULT_ADAPTERS_DIR

    @property
    def output_dir(self) -> Path:
        return self.adapters_dir / self.name


@dataclass(frozen=True)
class FolderState:
    """What an earlier launch of this name left in its output folder."""

    record: RunRecord | None = None
    has_weights: bool = False
    resume: Path | None = None


@dataclass(frozen=True)
class Facts:
    """What the machine and the files say, gathered before deciding."""

    workers: int  # GPUs (or CPU processes) per machine
    environ: dict[str, str]
    offline: bool
    folder: FolderState = field(default_factory=FolderState)
    estimate: Plan | None = None
    notes: tuple[str, ...] = ()
    flash_attn: bool = False  # flash-attn imports here (read by the pre-flight of a GPU launch)
    cpu: CpuFacts | None = None  # bf16 matmul support, gathered for cpu entries only


@dataclass(frozen=True)
class LaunchPlan:
    name: str
    entry: Entry
    profile: HardwareProfile
    recipe: RecipeInputs
    recipe_path: Path
    recipe_text: str
    argv: list[str]
    env: dict[str, str]
    output_dir: Path
    datasets: tuple[Path, ...]
    tensorboard_dir: Path  # where the trainer writes TensorBoard event files (env TENSORBOARD_LOGGING_DIR)
    move_aside: bool = False
    already_done: str | None = None  # set: the run finished earlier; nothing to launch
    resume: Path | None = None
    estimate: Plan | None = None
    notes: tuple[str, ...] = ()
    precision: Precision | None = None

    @property
    def recipe_ref(self) -> str:
        return repo_relative(self.recipe_path)


# ---------------------------------------------------------------- the entry and its checks


def entry_for(registry: Registry, request: LaunchRequest) -> Entry:
    """The registry entry with the request's overrides, validated again; the registry is not changed.

    This is the one place a launch's profile is decided: the entry's `profile`, or --profile."""
    entry = registry.get(request.name)
    overrides = {}
    if request.zero is not None:
        overrides["zero_stage"] = request.zero
    if request.profile is not None:
        overrides["profile"] = request.profile
    if overrides:
        entry = parse_entry(request.name, {**entry.model_dump(exclude_unset=True), **overrides})
    return entry


def check_request(request: LaunchRequest, entry: Entry) -> None:
    """Flags that do not fit the entry's profile."""
    cpu = PROFILES[entry.profile].accelerator == "cpu"
    if cpu:
        if request.gpus is not None:
            raise UserError("--gpus is for GPU profiles; a cpu entry takes --cpu-processes N")
        if request.num_machines > 1:
            raise UserError("--num-machines: multi-node runs are for GPU profiles; a cpu entry runs on one machine")
        cores = os.cpu_count() or 1
        if request.cpu_processes > cores:
            raise UserError(f"--cpu-processes {request.cpu_processes}: this machine has {cores} CPU core(s)")
        stage = entry.resolved.zero_stage
        if stage is not None and request.cpu_processes < 2:
            raise UserError(f"zero_stage {stage} on a cpu entry shards across processes: add --cpu-processes 2 "
                            "(or more), or remove zero_stage / --zero")
    elif request.cpu_processes != 1:
        raise UserError(f"--cpu-processes is for cpu entries; {request.name!r} is a GPU recipe: use --gpus N")
    elif request.precision != "auto":
        raise UserError(f"--precision is for cpu entries; {request.name!r} trains in the {entry.profile} profile's "
                        "precision (its recipe's bf16 key)")
    if request.num_machines > 1 or request.machine_rank is not None:
        if request.machine_rank is None:
            raise UserError("--num-machines > 1 needs --machine-rank (0 on the main machine)")
        if not request.main_process_ip:
            raise UserError("--machine-rank needs --main-process-ip (the rank-0 machine's address)")
        if request.machine_rank >= request.num_machines:
            raise UserError(f"--machine-rank {request.machine_rank}: must be below --num-machines "
                            f"{request.num_machines}")


def dataset_paths(registry: Registry, entry: Entry) -> tuple[Path, ...]:
    return tuple([registry.resolve_path(entry.dataset_path)] +
                 [registry.resolve_path(d.path) for d in entry.extra_datasets])


def missing_datasets(registry: Registry, entry: Entry) -> list[str]:
    """The entry's dataset files that are not there, repo-relative (--list's data column, --check's data line)."""
    return [repo_relative(p) for p in dataset_paths(registry, entry) if not p.is_file()]


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

    if path == BUNDLED_MODEL_DIR.resolve():
        if not convert:
            return [f"note: the bundled base model is converted into {repo_relative(path)} at launch"]
        try:
            ensure_base_model(path)
        except BundledModelMissing as exc:
            raise UserError(str(exc)) from None
        return []
    raise UserError(f"base model {entry.base_model!r}: no config.json in {path}; "
                    "give a model folder or a hub id such as meta-llama/Llama-3.1-8B-Instruct")


def check_target_modules(registry: Registry, entry: Entry) -> None:
    """A module name the model lacks passes axolotl's validator and fails inside peft at launch: say so
    now, wherever the model's architecture is known (a local config.json or the facts table)."""
    targets = entry.resolved.target_modules
    if targets == "all-linear":
        return

    try:
        arch = load_arch(registry.resolve_base_model(entry), REPO_ROOT)
    except MissingFacts:
        return  # unknown architecture: peft will be the judge
    arch.check_modules(targets, entry.base_model)


# ---------------------------------------------------------------- facts


def workers_here(request: LaunchRequest, profile: HardwareProfile) -> int:
    """CPU processes, or a dry run's GPUs (the flag, else the profile's); a GPU launch counts them in preflight."""
    if profile.accelerator == "cpu":
        return request.cpu_processes  # the planner and argv count CPU processes like GPUs
    return request.gpus or profile.num_gpus


def read_folder_state(output_dir: Path) -> FolderState:
    return FolderState(record=RunRecord.read(output_dir), has_weights=adapter_weights(output_dir) is not None,
                       resume=resume_point(output_dir))


def estimate_or_none(registry: Registry, entry: Entry, workers: int, num_machines: int) -> Plan | None:
    try:
        return plan_for_entry(registry, entry, num_gpus=workers, num_machines=num_machines)
    except (MissingFacts, UserError) as exc:
        print(f"note: no plan for this launch: {exc}", file=sys.stderr)
        return None


def preflight(registry: Registry, request: LaunchRequest, entry: Entry) -> tuple[list[Finding], MachineFacts,
                                                                           Plan | None]:
    """Read the machine and check it against the entry's plan (lora/train/preflight.py): findings, facts, plan."""
    profile = PROFILES[entry.profile]
    gpu = profile.accelerator == "cuda"
    local = is_local_model_ref(entry.base_model)
    cached = model_available_offline(entry.base_model, local)
    facts = gather(gpu=gpu, quant_bits=entry.quant_bits, base_model=entry.base_model, is_local=local,
                   model_cached=cached, output_dir=request.output_dir)
    workers = (request.gpus or len(facts.gpus) or profile.num_gpus) if gpu else request.cpu_processes
    plan = estimate_or_none(registry, entry, workers, request.num_machines)
    needs = needs_for(name=request.name, profile=profile, gpus_requested=request.gpus, entry=entry,
                      base_model=entry.base_model, output_dir=repo_relative(request.output_dir), plan=plan,
                      model_cached=cached, model_params=None if plan else _params_or_none(registry, entry))
    missing = missing_datasets(registry, entry)
    data = (Finding("FAIL", "data", f"{', '.join(missing)} missing (FinLoRA publishes its training files under "
                                    "data/train/)") if missing else Finding("ok", "data", "every dataset is present"))
    return [data, *run_checks(facts, needs)], facts, plan


def _params_or_none(registry: Registry, entry: Entry) -> int | None:
    try:
        return load_arch(registry.resolve_base_model(entry), REPO_ROOT).total_params
    except MissingFacts:
        return None


def gather_facts(registry: Registry, request: LaunchRequest, entry: Entry) -> Facts:
    profile = PROFILES[entry.profile]
    notes = check_datasets(registry, request.name, entry, allow_missing=request.dry_run)
    notes += ensure_base_model_present(registry, entry, convert=not request.dry_run)
    check_target_modules(registry, entry)
    offline = model_available_offline(entry.base_model, is_local_model_ref(entry.base_model))
    flash_attn = False
    if request.dry_run:  # a dry run neither reads the output folder nor estimates
        workers, folder, estimate = workers_here(request, profile), FolderState(), None
    elif profile.accelerator == "cuda":  # every GPU launch: pre-flight first, exit 2 before anything starts
        findings, machine, estimate = preflight(registry, request, entry)
        require(findings)  # a refusal is one line (the first failure); --check lists every finding
        for finding in findings:
            print(finding.line(), file=sys.stderr)
        workers, flash_attn = request.gpus or len(machine.gpus), machine.flash_attn_version is not None
        folder = read_folder_state(request.output_dir)
    else:
        workers = workers_here(request, profile)
        folder = read_folder_state(request.output_dir)
        estimate = estimate_or_none(registry, entry, workers, request.num_machines)
    return Facts(workers=workers, environ=dict(os.environ), offline=offline, folder=folder, estimate=estimate,
                 notes=tuple(notes), flash_attn=flash_attn,
                 cpu=cpu_facts() if profile.accelerator == "cpu" else None)


# ---------------------------------------------------------------- decide (pure)


TRACKER_ENV = {"wandb": "WANDB_PROJECT", "mlflow": "MLFLOW_TRACKING_URI"}  # set = that tracker on


def _launch_switches(inputs: RecipeInputs, profile: HardwareProfile, facts: Facts) -> list[str]:
    """What this machine adds to the committed recipe: flash-attn where it imports, trackers the environment
    names. Only switches go on the command line; project names, URIs and keys stay in the environment."""
    extra: list[str] = []
    attention = attention_for(profile, inputs.entry.attention, facts.flash_attn)
    if attention != inputs.attention:
        extra += ["--attn_implementation", attention]
    for tracker, var in TRACKER_ENV.items():
        if facts.environ.get(var) and tracker not in inputs.entry.trackers:
            extra += [f"--use_{tracker}", "true"]
    return extra


def _axolotl_overrides(inputs: RecipeInputs, estimate: Plan | None, resume: Path | None) -> list[str]:
    extra: list[str] = []
    if estimate is not None and estimate.seconds:  # a lost pod costs at most ~30 min of work
        extra += ["--save_steps", str(checkpoint_interval_steps(estimate, minutes=30))]
        if inputs.saves_per_epoch:  # the two are exclusive in axolotl; 0 switches the recipe's off
            extra += ["--saves_per_epoch", "0"]
    if resume is not None:
        extra += ["--resume_from_checkpoint", repo_relative(resume)]
    return extra


def _folder_decision(request: LaunchRequest, folder: FolderState, text: str) -> tuple[str | None, Path | None]:
    """(already-done message, resume point) from what the output folder holds."""
    if request.fresh or request.dry_run:
        return None, None
    record = folder.record
    where = repo_relative(request.output_dir)
    if record is not None and record.status == "complete" and folder.has_weights:
        return (f"{request.name}: already trained ({where}, finished {record.ended_at}); "
                "nothing to do (--fresh retrains, keeping the old folder)"), None
    if record is not None and record.recipe not in (None, text):
        raise UserError(f"{where} holds a run of a different recipe (the entry changed since); "
                        "--fresh moves it aside and starts over")
    return None, folder.resume


def precision_for(request: LaunchRequest, entry: Entry, profile: HardwareProfile, cpu: CpuFacts | None) -> Precision:
    """The precision this launch trains in: on the CPU by capability (lora/core/precision.py), else the profile's."""
    if profile.accelerator != "cpu":
        name = "bf16" if profile.bf16 else "fp32"
        return Precision(name, request.precision, f"the {profile.name} profile's precision")
    facts = cpu if cpu is not None else CpuFacts(False, "not gathered")
    return choose(request.precision, facts, cpu_bf16_blocker(entry.quant_bits, entry.resolved.zero_stage))


def decide(request: LaunchRequest, registry: Registry, entry: Entry, facts: Facts) -> LaunchPlan:
    profile = PROFILES[entry.profile]
    precision = precision_for(request, entry, profile, facts.cpu)
    inputs = recipe_inputs(registry, request.name, entry, recipes_dir=request.recipes_dir,
                           adapters_dir=request.adapters_dir, precision=request.precision)
    text = render(inputs)
    recipe_path = request.recipes_dir / f"{request.name}.yaml"
    already_done, resume = _folder_decision(request, facts.folder, text)
    cpu = profile.accelerator == "cpu"
    # `auto` is resolved here, not in the recipe (lora/core/precision.py says why): the recipe keeps fp32's keys.
    resolved_at_launch = ["--bf16", "True"] if inputs.precision == "auto" and precision.bf16 else []
    overrides = (_axolotl_overrides(inputs, facts.estimate, resume) + _launch_switches(inputs, profile, facts)
                 if not request.dry_run else [])
    argv = build_command(
        repo_relative(recipe_path), num_processes=facts.workers or 1, cpu=cpu,
        deepspeed_config=inputs.deepspeed_config, num_machines=request.num_machines,
        machine_rank=request.machine_rank or 0, main_process_ip=request.main_process_ip,
        main_process_port=request.main_process_port, mixed_precision="bf16" if precision.bf16 else "no",
        extra_axolotl_args=tuple(resolved_at_launch + overrides),
    )
    env = child_environment(facts.environ, offline=facts.offline, cpu=cpu,
                            deepspeed=inputs.deepspeed_config is not None)
    # the trainer's TensorBoard callback writes here (transformers reads TENSORBOARD_LOGGING_DIR)
    env.setdefault("TENSORBOARD_LOGGING_DIR", str((request.output_dir / "tensorboard").absolute()))
    return LaunchPlan(
        name=request.name, entry=entry, profile=profile, recipe=inputs, recipe_path=recipe_path, recipe_text=text,
        argv=argv, env=env, output_dir=request.output_dir, datasets=dataset_paths(registry, entry),
        move_aside=request.fresh and not request.dry_run, already_done=already_done, resume=resume,
        estimate=facts.estimate, notes=facts.notes, tensorboard_dir=Path(env["TENSORBOARD_LOGGING_DIR"]),
        precision=precision,
    )


# ---------------------------------------------------------------- execute


def write_recipe(plan: LaunchPlan) -> None:
    write_atomic(plan.recipe_path, plan.recipe_text)
    for note in plan.notes:
        print(note, file=sys.stderr)


def execute(plan: LaunchPlan, lock: RunLock) -> int:
    """Carry out a training plan; the caller holds `lock` for the run name."""
    write_recipe(plan)
    if plan.already_done:
        print(plan.already_done)
        return 0
    if plan.move_aside:
        moved = move_aside(plan.output_dir)
        if moved:
            print(f"--fresh: moved the old {repo_relative(plan.output_dir)} to {repo_relative(moved)}",
                  file=sys.stderr)
    if plan.estimate is not None:
        print(format_plan(plan.estimate), file=sys.stderr)
    if plan.resume is not None:
        print(f"resuming from {repo_relative(plan.resume)} (step {checkpoint_step(plan.resume)}); "
              "--fresh starts over", file=sys.stderr)
    return _train(plan, lock)


def _train(plan: LaunchPlan, lock: RunLock) -> int:
    output_dir = plan.output_dir
    record = start_record(
        name=plan.name, entry=plan.entry.model_dump(mode="json"), recipe_path=plan.recipe_ref,
        recipe_text=plan.recipe_text, prompt_format=prompt_format_record(plan.entry.resolved.prompt_format),
        base_model=plan.recipe.base_model, datasets=list(plan.datasets), command=plan.argv,
        profile=plan.profile.name, resumed_from=portable_path(plan.resume, output_dir) if plan.resume else None,
        output_dir=output_dir,
    )
    record = record.model_copy(update={"tensorboard_dir": portable_path(plan.tensorboard_dir, output_dir)})
    if plan.precision is not None:
        record.precision = PrecisionRecord(**plan.precision.record())
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write(output_dir)
    if plan.precision is not None:
        print(f"precision: {plan.precision.name} ({plan.precision.why})", file=sys.stderr)
    print(f"launching: {shlex.join(plan.argv)}", file=sys.stderr, flush=True)

    def started(pid: int) -> None:
        lock.record_child(pid)
        sampler.watch(pid)  # from here on: the child's process tree (accelerate, its workers)

    # The sampler's thread reads the training child's process tree (RSS, CPU, GPU) while it runs.
    with Sampler(interval=COMPUTE_INTERVAL, wait_for_child=True) as sampler, sampler.phase("train"):
        result = run_child(plan.argv, {**plan.env, **lock.env}, cwd=REPO_ROOT, on_start=started)
    if result.interrupted_by is not None:
        status, code = "interrupted", result.returncode or 128 + result.interrupted_by
    elif result.returncode == 0 and adapter_weights(output_dir) and training_finished(output_dir):
        status, code = "complete", 0
    else:
        status, code = "failed", result.returncode or 1
    finished = finish_record(record, status=status, exit_code=code, output_dir=output_dir)
    finished.model_copy(update={"compute": sampler.record()}).write(output_dir)
    plot_loss(output_dir, title=f"{plan.name} ({plan.entry.variant}, {plan.profile.name})")
    where = repo_relative(output_dir)
    if plan.tensorboard_dir.is_dir():
        print(f"tensorboard: tensorboard --logdir {repo_relative(plan.tensorboard_dir)}", file=sys.stderr)
    if status == "complete":
        print(f"adapter: {where} (run.json, loss.png beside it)", file=sys.stderr)
    else:
        print(f"training {status} (exit code {code}); {where} is not a finished adapter; "
              "run the same command again to resume from its last checkpoint", file=sys.stderr)
    return code
