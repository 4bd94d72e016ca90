"""Files: the repository root, atomic writes, checksums, and paths and JSON from the user turned into one-line
UserErrors instead of tracebacks.

    finlora eval --tasks-json ~nosuchuser/tasks.json --list-tasks     # error: ... (exit 2)
    finlora list --config-json /etc                                    # error: ... is not a file (exit 2)

Hostile inputs seen in practice: `~user` that does not exist (expanduser raises RuntimeError), names over
the file system's limit (stat raises ENAMETOOLONG, which pathlib does not swallow), NUL bytes (ValueError),
a folder where a file belongs, invalid UTF-8, integers over Python's digit limit and deep nesting (json
raises ValueError / RecursionError, not JSONDecodeError).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from lora.core.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]


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


NAME_MAX, PATH_MAX = 255, 4096  # bytes, Linux's limits


def path_problem(text: str) -> str | None:
    """Why the OS would refuse `text` as a path before looking (pathlib raises instead of answering)."""
    if "\x00" in text:
        return "embedded null byte"
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        return "holds a lone surrogate (\\ud800-\\udfff), which is not a file name"
    if len(raw) >= PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return "File name too long"
    return None


def user_path(text: str | Path, what: str) -> Path:
    """A path as the user wrote it, with ~ expanded; one UserError for what no file system accepts
    (NUL, lone surrogates, over-long names), so that no later exists()/resolve() raises a traceback."""
    problem = path_problem(str(text))
    if problem:
        shown = repr(str(text))
        raise UserError(f"{what} {shown if len(shown) <= 200 else shown[:199] + '…'}: {problem}")
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # ~nosuchuser
        raise UserError(f"{what} {text}: {exc}") from None


def user_path_in(text: str, folder: Path, what: str) -> Path:
    """user_path, a relative one taken relative to `folder` (a registry file's folder, as FinLoRA does)."""
    p = user_path(text, what)
    return p if p.is_absolute() else (folder / p).resolve()


def stat_kind(path: Path, what: str) -> str:
    """'file', 'dir', 'other' or 'missing'; UserError for a path the OS refuses to look at."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except ValueError as exc:  # embedded NUL byte
        raise UserError(f"{what} {path!r}: {exc}") from None
    except OSError as exc:  # ENAMETOOLONG, EACCES, ELOOP, ...
        raise UserError(f"{what} {_short(path)}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def require_file(path: Path, what: str) -> None:
    kind = stat_kind(path, what)
    if kind == "missing":
        raise UserError(f"{what} {_short(path)} not found")
    if kind != "file":
        raise UserError(f"{what} {_short(path)} is not a file")


def read_json(path: Path, what: str, object_pairs_hook=None) -> object:
    """The parsed content of a JSON file; every failure is one UserError naming the file."""
    require_file(path, what)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: {what} is not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # digit limit, nesting depth
        raise UserError(f"{path}: {what} is not valid JSON here ({type(exc).__name__}: {exc})") from None


def check_writable_dir(path: Path, what: str) -> None:
    """Create the folder if needed and prove a file can be written in it, before hours of generation."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"{what} {_short(path)} is not a writable folder ({reason})") from None


def _short(path: Path, limit: int = 200) -> str:
    """Over-long names are shown cut, so the message stays readable."""
    text = str(path)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unique_keys(what: str):
    """A json object_pairs_hook refusing a key given twice (json.loads would silently keep the last)."""
    def hook(pairs: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise UserError(f"duplicate key {key!r} in the {what}; each name and key must appear once")
            seen[key] = value
        return seen
    return hook
