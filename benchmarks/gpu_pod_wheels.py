"""The wheels the GPU pod check carries to a lent GPU machine: which ones, fetched here, slimmed to travel.

    python benchmarks/gpu_pod_check.py --download-wheels wheels/gpu    # here, with network, once (git-ignored)

The GPU machine has no network: `python benchmarks/gpu_pod_check.py --wheels wheels/gpu` installs these there
(--no-index --no-deps). docs/pods.md, "GPU run".
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_pod_model import REPO, TOKENIZER_FILES

# What the GPU machine lacks (issue 10): these five, plus what `import axolotl.cli.train, axolotl.train, lora.cli.verbs.train,
# eval.engine` needs beyond torch/transformers/accelerate/peft and their requirements (found on the CPU machine
# in a venv holding only those, adding each missing module until the import worked), pinned to the versions
# tested here. Not carried, because the GPU image already has them (the device tool's KINDS.md package list,
# read 2026-11-17): tensorboard, xxhash, python-dateutil, six, and the big ones the import also needs (pandas,
# pyarrow, numba + llvmlite); the report's import probe names the first module missing if that changes.
# --no-deps: pip never resolves (no network there).
WHEELS = ("axolotl==0.19.0", "trl==1.9.0", "datasets==4.8.4", "peft==0.20.0", "bitsandbytes==0.50.2")
EXTRA_WHEELS = ("fire==0.7.1", "termcolor==3.3.0", "addict==2.4.0", "multiprocess==0.70.19", "dill==0.4.1",
                "posthog==6.7.11", "backoff==2.2.1", "distro==1.9.0", "fastcore==2.2.39",
                "kernels==0.16.2", "kernels-data==0.16.2", "pytz==2026.6",
                "pydantic==2.12.5", "pydantic_core==2.41.5", "typing-inspection==0.4.5", "annotated-types==0.8.0")
PYTHON_VERSION = "3.12"
# bitsandbytes 0.50.2 ships manylinux_2_24 only: --platform manylinux2014_x86_64 alone finds no wheel
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
# The device tool's limits (its README): the working tree that travels (tracked and untracked-not-ignored files
# plus the carried paths) is at most 64 MiB.
TRAVEL_LIMIT_BYTES = 64 * 2**20
CARRY = ("wheels/gpu", *(f"models/base_model/smollm2-135m-instruct/{f}" for f in TOKENIZER_FILES))


# ---------------------------------------------------------------- wheels, here


def download_command(dest: Path) -> list[str]:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            *platforms, "--no-deps", "-d", str(dest), *WHEELS, *EXTRA_WHEELS]


def travel_bytes(repo: Path, carried: tuple[str, ...]) -> int:
    """What the device tool sends: tracked and untracked-not-ignored files, plus the carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    files = {repo / f for f in listed if f}
    for c in carried:
        path = repo / c
        files |= set(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else {path}
    return sum(f.stat().st_size for f in files if f.is_file())


_BNB_LIB = re.compile(r"^bitsandbytes/libbitsandbytes_(?P<backend>[a-z]+)(?P<version>\d*)\.so$")


def keep_bnb_member(name: str, cuda_major: str) -> bool:
    """bitsandbytes ships a native library per CUDA, ROCm and XPU version (130 MB unpacked, 43 MB packed, most
    of the carry limit); it loads the one for torch's CUDA, falling back within the same major version only.
    Keep the CPU one and those of `cuda_major` (the GPU machine's torch is +cu130: KINDS.md)."""
    m = _BNB_LIB.match(name)
    if m is None:
        return True
    return m["backend"] == "cpu" or (m["backend"] == "cuda" and m["version"].startswith(cuda_major))


def slim_wheel(wheel: Path, keep) -> int:
    """Rewrite `wheel` in place without the members `keep(name)` rejects (their RECORD lines too); returns
    the number dropped. pip installs the result as it would the original."""
    import zipfile

    tmp = wheel.with_suffix(".slim")
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        kept = [i for i in src.infolist() if keep(i.filename)]
        dropped = len(src.infolist()) - len(kept)
        names = {i.filename for i in kept}
        for info in kept:
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "".join(f"{line}\n" for line in lines if line.split(",", 1)[0] in names
                               or line.split(",", 1)[0].endswith("RECORD")).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return dropped


def download_wheels(dest: Path, cuda_major: str = "13") -> int:
    dest.mkdir(parents=True, exist_ok=True)
    code = subprocess.run(download_command(dest), cwd=REPO).returncode
    for wheel in dest.glob("bitsandbytes-*.whl"):
        slim_wheel(wheel, lambda name: keep_bnb_member(name, cuda_major))
    wheels = sorted(dest.glob("*.whl"))
    travel = travel_bytes(REPO, CARRY)
    print(f"{dest}: {len(wheels)} wheels, {sum(p.stat().st_size for p in wheels) / 2**20:.1f} MiB; the working "
          f"tree with them and the tokenizer: {travel / 2**20:.1f} MiB of the device tool's "
          f"{TRAVEL_LIMIT_BYTES // 2**20} MiB")
    if travel > TRAVEL_LIMIT_BYTES:
        print(f"error: {travel / 2**20:.1f} MiB would not travel; carry fewer wheels (WHEELS, EXTRA_WHEELS)",
              file=sys.stderr)
        return 1
    return code
