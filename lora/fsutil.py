"""Small file-system helpers shared by the CLI, the data script and the eval package."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_atomic(path: Path | str, payload: bytes | str, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path | str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def repo_relative(path: Path | str, root: Path = REPO_ROOT) -> str:
    """A path as written into recipes: relative to the repo root when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(p)


def utc_now_iso() -> str:
    """The project's one timestamp format: UTC, seconds, ISO 8601 (run.json, results.json, pair files)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# PEFT writes one of these beside adapter_config.json; checkpoints hold the same.
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_weights(folder: Path) -> Path | None:
    for name in ADAPTER_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed distribution versions (None when absent), for run.json and results.json."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
