"""The state of one run name's output folder: lock, resume point, fresh start.

    python finetune.py <name>            # resumes from the newest complete checkpoint, if any
    python finetune.py <name> --fresh    # moves the old folder aside (never deletes) and starts over

A pod that dies loses at most one checkpoint interval: re-running the same name picks up the newest
checkpoint whose trainer state and adapter weights were both written (a checkpoint cut off mid-save
is skipped). Two launches of one name on one machine would corrupt each other's checkpoints, so the
second refuses while the first one's PID is alive; a lock left by a dead process is taken over.
"""
from __future__ import annotations

import errno
import os
from datetime import datetime
from pathlib import Path

from lora.outputs import complete_checkpoints
from lora.registry import UserError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


class RunLock:
    """An exclusive lock file holding the owner's PID; stale locks (dead PID) are taken over."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise UserError(
                        f"{self.path.parent.name} is already training here (PID {owner}, lock {self.path}); "
                        "wait for it, or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return
        raise UserError(f"could not take the lock {self.path}; another launch is racing for it")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0") or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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
