"""Pre-flight: will this launch start on this machine? One line per finding; any FAIL exits 2.

    python finetune.py sentiment_llama_3_1_8b_8bits_r8 --check               # this machine, the entry's profile
    python finetune.py sentiment_llama_3_1_8b_8bits_r8 --profile auto --check

Every GPU launch runs the same checks first. `gather` is the only function that looks at the machine
(torch, the driver through libcuda, bitsandbytes, flash-attn, disk, the hub cache, the hub with a short
timeout, the output folder); every `check_*` is pure over the gathered `MachineFacts` and a `Needs` built
from the entry and its plan, so tests fake the facts. Tokens are only ever tested for presence.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.errors import UserError
from lora.estimate import estimate
from lora.estimate.constants import GIB
from lora.recipe.profiles import GpuInfo, HardwareProfile, attention_for

HUB_TIMEOUT_S = 5.0
# PyTorch's wheel indexes (download.pytorch.org/whl/cuXYZ), oldest first: the fix for an old driver is
# the newest of these the driver supports.
TORCH_CUDA_INDEXES = ("11.8", "12.1", "12.4", "12.6", "12.8", "12.9", "13.0")
# adapter + optimizer state (fp32 weights, Adam's two moments) per trainable parameter, per checkpoint;
# save_total_limit 2 keeps two and a third is written before the oldest goes
CHECKPOINT_BYTES_PER_PARAM = 12
CHECKPOINTS_ON_DISK = 3


@dataclass(frozen=True)
class MachineFacts:
    """What `gather` read; every field is a fact, never a verdict."""

    torch_version: str | None = None  # None: torch does not import
    torch_cuda: str | None = None  # torch.version.cuda ("12.8"); None: a CPU build
    driver_cuda: str | None = None  # the newest CUDA the driver runs (cuDriverGetVersion); None: no driver
    cuda_available: bool = False
    gpus: tuple[GpuInfo, ...] = ()
    bnb_error: str | None = None  # None: bitsandbytes quantised on the GPU (or was not needed)
    flash_attn_version: str | None = None  # None: flash-attn does not import
    free_disk_gb: dict[str, float] = field(default_factory=dict)  # folder -> free GiB (cache, output)
    same_disk: bool = True  # the hub cache and the output folder share a filesystem
    model_cached: bool = True  # local folder, or config.json in the hub cache
    hub_offline: bool = False  # HF_HUB_OFFLINE set
    hub_error: str | None = None  # None: reached (or not needed); else why not
    model_gated: bool | None = None  # from the hub's model info; None: unknown
    token_present: bool = False
    output_error: str | None = None  # None: a file could be created in the output folder


@dataclass(frozen=True)
class Needs:
    """What the launch needs, from the entry, the request and the plan."""

    name: str
    profile: HardwareProfile
    gpus_requested: int | None
    quant_bits: int
    attention_requested: str | None
    base_model: str
    output_dir: str
    peak_gb: float | None = None  # the plan's per-GPU peak
    plan: object | None = None  # lora.estimate.Plan, for the cheapest change that fits
    download_gb: float = 0.0  # base model weights to fetch (0 when cached)
    checkpoints_gb: float = 0.0


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "note" or "FAIL"
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.check}: {self.message}"


def _ok(check: str, message: str) -> Finding:
    return Finding("ok", check, message)


def _fail(check: str, message: str) -> Finding:
    return Finding("FAIL", check, message)


def _version(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (text or "0").split(".")[:2] if p.isdigit())


def torch_fix(torch_version: str | None, driver_cuda: str) -> str:
    """The install command for a torch built for a CUDA this driver runs."""
    fitting = [c for c in TORCH_CUDA_INDEXES if _version(c) <= _version(driver_cuda)]
    if not fitting:
        return f"upgrade the NVIDIA driver: CUDA {driver_cuda} is older than any PyTorch build (11.8 and up)"
    index = "cu" + fitting[-1].replace(".", "")
    pin = f"torch=={torch_version.split('+')[0]}" if torch_version else "torch"
    return (f"pip install --force-reinstall {pin} --index-url https://download.pytorch.org/whl/{index} "
            f"(if that index lacks this version, the newest torch it has; or upgrade the driver)")


# ---------------------------------------------------------------- the checks (pure)


def check_cuda(f: MachineFacts) -> Finding:
    if f.torch_version is None:
        return _fail("cuda", "torch does not import; pip install -r requirements.txt -r requirements-gpu.txt")
    if f.torch_cuda is None:
        return _fail("cuda", f"torch {f.torch_version} is a CPU build, so this machine trains no GPU recipe: train "
                             "a cpu entry such as sentiment_smollm2_cpu here; on a GPU machine pip install "
                             "--force-reinstall torch --index-url https://download.pytorch.org/whl/cu128 (or the "
                             "cuXYZ its driver runs; --check says which)")
    if f.driver_cuda is None:
        return _fail("cuda", f"no NVIDIA driver found (libcuda.so.1 did not load) for torch {f.torch_version} "
                             f"(CUDA {f.torch_cuda}); this machine has no usable GPU: train a cpu entry such as "
                             "sentiment_smollm2_cpu, or rent a GPU (docs/pods.md)")
    if _version(f.driver_cuda) < _version(f.torch_cuda):
        return _fail("cuda", f"the driver runs CUDA {f.driver_cuda} but torch {f.torch_version} is built for CUDA "
                             f"{f.torch_cuda}; {torch_fix(f.torch_version, f.driver_cuda)}")
    if not f.cuda_available:
        return _fail("cuda", f"torch {f.torch_version} (CUDA {f.torch_cuda}) with a CUDA {f.driver_cuda} driver "
                             "finds no CUDA GPU (check CUDA_VISIBLE_DEVICES and nvidia-smi); check the recipe with "
                             "--dry-run, or train a cpu entry such as sentiment_smollm2_cpu")
    return _ok("cuda", f"torch {f.torch_version} (CUDA {f.torch_cuda}), driver runs CUDA {f.driver_cuda}")


def check_gpus(f: MachineFacts, n: Needs) -> Finding:
    found, wanted = len(f.gpus), n.gpus_requested
    if found == 0:
        return _fail("gpus", "no CUDA GPU found")
    if wanted is not None and wanted > found:
        return _fail("gpus", f"--gpus {wanted}: only {found} CUDA GPU(s) found on this machine ({f.gpus[0].name})")
    using = wanted or found
    text = f"{found}x {f.gpus[0].name}, using {using}"
    if using != n.profile.num_gpus:
        return Finding("note", "gpus", f"{text}; profile {n.profile.name} is {n.profile.num_gpus} GPU(s), so the "
                                       "plan below is for the GPUs used here (--profile auto describes this machine)")
    return _ok("gpus", text)


def cheapest_fit(plan, free_gb: float) -> str | None:
    """The plan's cheapest change that fits in `free_gb` per GPU (lora/estimate/estimate.py), or None."""
    refit = estimate(plan.inputs.model_copy(update={"gpu_memory_gb": free_gb}), plan.arch)
    return None if refit.suggestion is None else f"{refit.suggestion.change} (peak {refit.suggestion.peak_gb_per_gpu:.2f} GB)"


def check_memory(f: MachineFacts, n: Needs) -> Finding:
    if n.peak_gb is None:
        return Finding("note", "memory", "no plan for this entry, so no peak to compare with free memory")
    used = f.gpus[: n.gpus_requested or len(f.gpus)]
    known = [(i, g) for i, g in enumerate(used) if g.free_gib is not None]
    if not known:
        return Finding("note", "memory", f"plan peak {n.peak_gb:.2f} GB per GPU; free memory could not be read")
    i, tightest = min(known, key=lambda ig: ig[1].free_gib)
    if tightest.free_gib >= n.peak_gb:
        return _ok("memory", f"plan peak {n.peak_gb:.2f} GB per GPU, least free {tightest.free_gib:.2f} GB (GPU {i})")
    fix = cheapest_fit(n.plan, tightest.free_gib) if n.plan is not None else None
    return _fail("memory", f"plan peak {n.peak_gb:.2f} GB per GPU but GPU {i} has {tightest.free_gib:.2f} GB free "
                           f"of {tightest.total_gib:.2f}; "
                           + (f"cheapest change that fits: {fix}" if fix else
                              "no single change fits: free the GPU (nvidia-smi shows who holds it) or rent a larger one"))


def check_bitsandbytes(f: MachineFacts, n: Needs) -> Finding | None:
    if n.quant_bits == 16:
        return None
    if f.bnb_error is not None:
        return _fail("bitsandbytes", f"{n.quant_bits}-bit needs bitsandbytes' CUDA kernels: {f.bnb_error}; "
                                     "pip install bitsandbytes==0.50.2 (prebuilt for CUDA 11.8-13)")
    return _ok("bitsandbytes", f"CUDA kernels load ({n.quant_bits}-bit base)")


def check_attention(f: MachineFacts, n: Needs) -> Finding:
    backend = attention_for(n.profile, n.attention_requested, f.flash_attn_version is not None)
    if backend == "flash_attention_2" and f.flash_attn_version is None:
        return _fail("attention", "the entry asks for flash_attention_2 and flash-attn does not import; install a "
                                  "prebuilt wheel (docs/pods.md) or set \"attention\": \"sdpa\"")
    why = (f"flash-attn {f.flash_attn_version}" if backend == "flash_attention_2" else
           "PyTorch's, no extra package" if backend == "sdpa" else "the entry asks")
    return _ok("attention", f"{backend} ({why})")


def check_disk(f: MachineFacts, n: Needs) -> Finding:
    need = n.download_gb + n.checkpoints_gb
    if not f.free_disk_gb:
        return Finding("note", "disk", f"needs {need:.1f} GB; free space could not be read")
    if f.same_disk:
        free = min(f.free_disk_gb.values())
        short = free < need
        detail = f"needs {n.download_gb:.1f} GB model download + {n.checkpoints_gb:.1f} GB checkpoints, {free:.1f} GB free"
    else:
        frees = list(f.free_disk_gb.values())
        short = frees[0] < n.download_gb or frees[-1] < n.checkpoints_gb
        detail = (f"needs {n.download_gb:.1f} GB for the model ({frees[0]:.1f} GB free in the hub cache) and "
                  f"{n.checkpoints_gb:.1f} GB for checkpoints ({frees[-1]:.1f} GB free in the output folder)")
    where = ", ".join(f.free_disk_gb)
    return _fail("disk", f"{detail} ({where}); free space or set HF_HOME to a larger disk") if short else \
        _ok("disk", detail)


def check_model(f: MachineFacts, n: Needs) -> Finding:
    if f.model_cached:
        return _ok("model", f"{n.base_model} is on disk")
    if f.hub_offline:
        return _fail("model", f"{n.base_model} is not in the hub cache and HF_HUB_OFFLINE is set; download it on a "
                              "machine with network (huggingface-cli download) or unset HF_HUB_OFFLINE")
    if f.hub_error is not None:
        return _fail("model", f"{n.base_model} is not cached and the hub is unreachable ({f.hub_error}); "
                              "check the network or HF_ENDPOINT")
    return _ok("model", f"{n.base_model} will download from the hub ({n.download_gb:.1f} GB)")


def check_token(f: MachineFacts, n: Needs) -> Finding | None:
    if f.model_cached or not f.model_gated:
        return None
    if not f.token_present:
        return _fail("token", f"{n.base_model} is gated and not cached: accept its licence on the hub, then "
                              "huggingface-cli login (or export HF_TOKEN)")
    return _ok("token", "a hub token is set (gated model)")


def check_output(f: MachineFacts, n: Needs) -> Finding:
    if f.output_error is not None:
        return _fail("output", f"cannot write in {n.output_dir}: {f.output_error}")
    return _ok("output", f"{n.output_dir} is writable")


def run_checks(f: MachineFacts, n: Needs) -> list[Finding]:
    """Every finding, in the order a user fixes them; GPU checks stop at the first GPU failure."""
    gpu = n.profile.accelerator == "cuda"
    findings: list[Finding | None] = []
    if gpu:
        cuda = check_cuda(f)
        findings.append(cuda)
        if cuda.level == "ok":
            gpus = check_gpus(f, n)
            findings.append(gpus)
            if gpus.level != "FAIL":
                findings += [check_memory(f, n), check_bitsandbytes(f, n)]
        findings.append(check_attention(f, n))
    findings += [check_disk(f, n), check_model(f, n), check_token(f, n), check_output(f, n)]
    return [x for x in findings if x is not None]


def failed(findings: list[Finding]) -> list[Finding]:
    return [x for x in findings if x.level == "FAIL"]


def summary(findings: list[Finding]) -> str:
    """The UserError text: the first failure, and how many others `--check` lists."""
    bad = failed(findings)
    more = f" (+{len(bad) - 1} more: --check lists them)" if len(bad) > 1 else ""
    return f"pre-flight {bad[0].check}: {bad[0].message}{more}"


# ---------------------------------------------------------------- needs (from the entry and its plan)


def needs_for(*, name: str, profile: HardwareProfile, gpus_requested: int | None, entry, base_model: str,
              output_dir: str, plan, model_cached: bool, model_params: int | None = None) -> Needs:
    """model_params: the base's parameter count when there is no plan (its architecture is known)."""
    params = plan.arch.total_params if plan is not None else model_params
    # the hub serves 16-bit safetensors; quantisation happens after the download
    download = params * 2 / GIB if params and not model_cached else 0.0
    checkpoints = 0.0
    if plan is not None:
        checkpoints = plan.trainable_params * CHECKPOINT_BYTES_PER_PARAM * CHECKPOINTS_ON_DISK / GIB
    return Needs(name=name, profile=profile, gpus_requested=gpus_requested, quant_bits=entry.quant_bits,
                 attention_requested=entry.attention, base_model=base_model, output_dir=output_dir,
                 peak_gb=plan.peak_gb_per_gpu if plan is not None else None, plan=plan,
                 download_gb=round(download, 2), checkpoints_gb=round(checkpoints, 2))


# ---------------------------------------------------------------- gather (the thin edge)


def driver_cuda_version() -> str | None:
    """The newest CUDA the installed driver runs, read from libcuda itself (works when torch's CUDA is newer)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def gather_gpus() -> tuple[GpuInfo, ...]:
    """This machine's CUDA devices as torch sees them (honours CUDA_VISIBLE_DEVICES); () without CUDA."""
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free = None
        with contextlib.suppress(RuntimeError):
            free = torch.cuda.mem_get_info(i)[0] / GIB
        major = getattr(props, "major", 0)
        gpus.append(GpuInfo(name=torch.cuda.get_device_name(i), total_gib=round(props.total_memory / GIB, 2),
                            free_gib=None if free is None else round(free, 2), bf16=major >= 8))
    return tuple(gpus)


def _bnb_error() -> str | None:
    try:
        import bitsandbytes.functional as bnbf
        import torch

        bnbf.quantize_4bit(torch.ones(64, device="cuda", dtype=torch.float16))
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - any failure is the finding, in one line
        return f"{type(exc).__name__}: {exc}"
    return None


def _flash_attn_version() -> str | None:
    try:
        import flash_attn
    except Exception:  # noqa: BLE001 - an import that fails (ABI mismatch, no CUDA) is "not usable"
        return None
    return getattr(flash_attn, "__version__", "unknown")


def _nearest_existing(path: Path) -> Path:
    """path, or its closest folder that exists: the pre-flight reads a disk and writes a probe without
    creating the folders a launch would create."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_gib(path: Path) -> tuple[str, float, int] | None:
    probe = _nearest_existing(path)
    try:
        return str(path), shutil.disk_usage(probe).free / GIB, os.stat(probe).st_dev
    except OSError:
        return None


def _hub_cache() -> Path:
    try:
        from huggingface_hub import constants
        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"


def _hub_info(base_model: str) -> tuple[str | None, bool | None]:
    """(error, gated) from the hub's model info, with a short timeout; the token is used, never shown."""
    try:
        from huggingface_hub import HfApi
        info = HfApi().model_info(base_model, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - unreachable, unknown repo, gated without access: one line
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        gated = True if "gated" in text.lower() or "401" in text or "403" in text else None
        return (None if gated else text[:200]), gated
    return None, bool(getattr(info, "gated", False))


def _output_error(output_dir: Path) -> str | None:
    probe = _nearest_existing(output_dir)
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".preflight-"):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def gather(*, gpu: bool, quant_bits: int, base_model: str, is_local: bool, model_cached: bool,
           output_dir: Path) -> MachineFacts:
    """Read this machine. Only what the checks of this launch need is read (no hub call for a cached model)."""
    torch_version = torch_cuda = None
    cuda_available = False
    with contextlib.suppress(ImportError):
        import torch
        torch_version, torch_cuda = torch.__version__, torch.version.cuda
        cuda_available = gpu and torch.cuda.is_available()
    gpus = gather_gpus() if cuda_available else ()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    hub_error = gated = None
    if not model_cached and not offline and not is_local:
        hub_error, gated = _hub_info(base_model)
    token = False
    with contextlib.suppress(ImportError):
        from huggingface_hub import get_token
        token = get_token() is not None
    disks = [d for d in (_free_gib(_hub_cache()), _free_gib(output_dir)) if d is not None]
    return MachineFacts(
        torch_version=torch_version, torch_cuda=torch_cuda,
        driver_cuda=driver_cuda_version() if gpu else None, cuda_available=cuda_available, gpus=gpus,
        bnb_error=_bnb_error() if gpus and quant_bits < 16 else None,
        flash_attn_version=_flash_attn_version() if gpu else None,
        free_disk_gb={where: round(free, 1) for where, free, _ in disks},
        same_disk=len({dev for _, _, dev in disks}) <= 1,
        model_cached=model_cached, hub_offline=offline, hub_error=hub_error, model_gated=gated,
        token_present=token, output_error=_output_error(output_dir),
    )


def require(findings: list[Finding]) -> None:
    """Before a launch: the findings that matter on stderr, and a UserError (exit 2) on any failure."""
    if failed(findings):
        raise UserError(summary(findings))
