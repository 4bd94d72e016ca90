"""Running a child process group: signals forwarded once, the whole group waited for, exit codes passed through.

    finlora train sentiment_smollm2_cpu   # accelerate runs through run_child; Ctrl-C reaches every worker once

`run_child` is the only place a training, SkyPilot or queue child starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lora.core.files import REPO_ROOT

GROUP_GRACE_SECONDS = 180.0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_group(pgid: int, grace_seconds: float, poll: float = 0.2) -> None:
    """Wait for every process of the group to exit; past the grace period, SIGTERM then SIGKILL it."""
    deadline = time.monotonic() + grace_seconds
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(poll)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while group_alive(pgid) and time.monotonic() < end:
            time.sleep(poll)


class ChildResult:
    def __init__(self, returncode: int, interrupted_by: int | None):
        self.returncode = returncode
        self.interrupted_by = interrupted_by  # the signal we forwarded, if any


def run_child(argv: list[str], env: dict[str, str], cwd: Path = REPO_ROOT,
              on_start: Callable[[int], None] | None = None) -> ChildResult:
    """Run the launcher in its own process group; forward Ctrl-C / SIGTERM to the whole group.

    A group of its own means a terminal Ctrl-C reaches only us, and we pass it on exactly once to
    accelerate and every worker it started (axolotl saves the adapter on SIGINT and exits 0, so the
    caller must know the run was interrupted rather than finished).
    """
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
    if on_start is not None:
        on_start(proc.pid)  # its process group id: the lock's record of who is training
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = proc.wait()
        # accelerate can exit before its workers (measured: on Ctrl-C it returned while axolotl was
        # still saving the adapter); the run is over only when the whole group is gone.
        wait_for_group(proc.pid, grace_seconds=GROUP_GRACE_SECONDS)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if returncode < 0:  # killed by a signal: report it the way a shell does
        returncode = 128 - returncode
    return ChildResult(returncode, received[0] if received else None)
