"""The state of one run name's output folder: lock, resume point, fresh start.

    python finetune.py <name>            # resumes from the newest complete checkpoint, if any
    python finetune.py <name> --fresh    # moves the old folder aside (never deletes) and starts over

A pod that dies loses at most one checkpoint interval: re-running the same name picks up the newest
checkpoint whose trainer state and adapter weights were both written (a checkpoint cut off mid-save
is skipped).

Two trainings of one name would corrupt each other's checkpoints, so a launch holds the name's lock
for as long as anything of it runs. The lock (`<adapters>/.<name>.lock`, beside the output folder so
that --fresh can move the folder while holding it) is two things:
- an flock on the file: taken atomically, released by the kernel when the launcher dies (no stale
  file, no race between two launchers reading and writing a PID);
- a token the launcher exports to its child (RUN_LOCK_ENV): every process of the training inherits
  it, whatever session or process group it starts (torchrun workers start their own sessions). A new
  launch that finds the flock free but processes carrying the last holder's token refuses: the
  launcher died and its trainer is still writing the folder.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from lora.core.errors import UserError
from lora.core.process import group_alive
from lora.train.outputs import complete_checkpoints

RUN_LOCK_ENV = "FINLORA_RUN_LOCK"
PROC = Path("/proc")


def lock_path(adapters_dir: Path, name: str) -> Path:
    return adapters_dir / f".{name}.lock"


def processes_with_token(token: str, proc: Path = PROC) -> list[int]:
    """PIDs whose environment carries RUN_LOCK_ENV=token (Linux /proc; [] where there is none)."""
    needle = f"{RUN_LOCK_ENV}={token}".encode()
    found = []
    for entry in proc.glob("[0-9]*") if proc.is_dir() else ():
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


class RunLock:
    """The exclusive right to train one run name (see the module docstring)."""

    def __init__(self, adapters_dir: Path, name: str):
        self.path = lock_path(adapters_dir, name)
        self.name = name
        self.token = secrets.token_hex(16)
        self._fd: int | None = None
        self._made: list[Path] = []  # folders the lock created (deepest first): a refused launch removes them

    @property
    def env(self) -> dict[str, str]:
        """What the child's environment must carry so that its processes count as holding the lock."""
        return {RUN_LOCK_ENV: self.token}

    def acquire(self) -> None:
        fd = self._lock_current_file()
        previous = _read(fd)
        survivors = self._survivors(previous)
        if survivors:
            os.close(fd)  # releases the flock
            pids = " ".join(map(str, survivors[:8]))
            raise UserError(f"{self.name}: the last launcher is gone but its training processes still run "
                            f"(PIDs {pids}); wait for them or stop them (kill {pids}) before launching again")
        self._fd = fd
        self._write({"launcher_pid": os.getpid(), "token": self.token, "child_pgid": None,
                     "started_at": datetime.now().isoformat(timespec="seconds")})

    def _lock_current_file(self) -> int:
        """flock the file that is at self.path now. A releaser unlinks the file while holding it, so a
        file we opened just before that is stale: lock it, see it is no longer at the path, try again."""
        self._made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        for _ in range(100):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a refused launch of another name removed the empty folder meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read(fd).get("launcher_pid")
                os.close(fd)
                raise UserError(f"{self.name} is already training here (launcher PID {owner}, lock {self.path}); "
                                "wait for it, or stop it first") from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return fd
            os.close(fd)
        raise UserError(f"could not take the lock {self.path}; other launches keep racing for it")

    @staticmethod
    def _survivors(previous: dict) -> list[int]:
        token = previous.get("token")
        if not isinstance(token, str):
            return []
        if PROC.is_dir():
            return [p for p in processes_with_token(token) if p != os.getpid()]
        pgid = previous.get("child_pgid")  # no /proc (macOS): the child's process group is what we know
        return [pgid] if isinstance(pgid, int) and group_alive(pgid) else []

    def record_child(self, pgid: int) -> None:
        """Note the trainer's process group (the fallback liveness check where /proc is missing)."""
        if self._fd is not None:
            self._write({**_read(self._fd), "child_pgid": pgid})

    def _write(self, content: dict) -> None:
        data = (json.dumps(content) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Remove the file while still holding it (acquirers check they locked the file at the path),
        so a finished or refused launch leaves nothing behind. A launcher that dies leaves it, with
        the token its surviving trainer processes carry."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
        for folder in self._made:  # only while empty: a launch that wrote its outputs keeps them
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        obj = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def resume_point(output_dir: Path) -> Path | None:
    complete = complete_checkpoints(output_dir)
    return complete[-1] if complete else None


def move_aside(output_dir: Path, now: datetime | None = None) -> Path | None:
    """--fresh: rename the old folder to <name>.old-<timestamp>; nothing is deleted."""
    if not output_dir.exists():
        return None
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    target = output_dir.with_name(f"{output_dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = output_dir.with_name(f"{output_dir.name}.old-{stamp}-{n}")
    output_dir.rename(target)
    return target
