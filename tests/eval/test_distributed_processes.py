"""`python -m eval --processes 2` for real (torchrun's launcher, gloo, the bundled SmolLM2-135M on CPU): the
same files as one process, a rank SIGKILLed mid-run fails the run in one line and resumes identically,
and a rank that hangs alive is given up on after --rank-timeout.
Slow (each run starts interpreters and loads the model; minutes on a shared 2-core machine).

    .venv/bin/python -m pytest tests/eval/test_distributed_processes.py -q -m slow
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora.cli.shims import eval_main as main
from tests.eval.test_distributed import without_timing

REPO = Path(__file__).resolve().parents[2]
TASKS = "fpb,tfns"  # 10-token answers: short generations
LIMIT = 4  # x batch size 2: two batches per pair, one per rank


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from eval.fixtures import make_tiny_adapter
    from lora.core.base_model import ensure_base_model

    root = tmp_path_factory.mktemp("lora_adapters")
    make_tiny_adapter(root / "tiny_a", ensure_base_model(quiet=True), seed=1)
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [str(root), "--tasks", TASKS, "--limit", str(LIMIT), "--batch-size", "2", "--out", str(out),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def one_process(adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    assert main(_args(adapters, out)) == 0
    return out


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _eval(*argv: str) -> list[str]:
    return [sys.executable, "-m", "eval", *argv]


def assert_same_outputs(one: Path, other: Path) -> None:
    """Predictions byte for byte; pair files and results.json equal but for clocks and the command."""
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))
    assert len([f for f in files if f.parts[0] == "pairs"]) == 4  # base + tiny_a, x 2 tasks
    for f in files:
        if f.parts[0] == "predictions":
            assert (one / f).read_bytes() == (other / f).read_bytes(), f
        else:
            assert without_timing(json.loads((one / f).read_text())) == without_timing(json.loads((other / f).read_text())), f


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(adapters, one_process, tmp_path):
    out = tmp_path / "two"
    proc = subprocess.run(_eval(*_args(adapters, out, "--processes", "2")), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eval: 2 processes" in proc.stderr and "Traceback" not in proc.stderr
    assert_same_outputs(one_process, out)
    timings = json.loads((out / "results.json").read_text())["timings"]
    assert timings["processes"] == 2
    assert [r["rank"] for r in timings["ranks"]] == [0, 1]
    assert sum(r["rows"] for r in timings["ranks"]) == 4 * LIMIT and all(r["pairs"] == 4 for r in timings["ranks"])


def _ranks(pid: int) -> list:
    """The launcher's worker processes (multiprocessing spawn children), oldest first."""
    import psutil

    kids = [p for p in psutil.Process(pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    return sorted(kids, key=lambda p: p.create_time())


@pytest.mark.slow
def test_sigkill_of_one_rank_fails_in_one_line_and_a_rerun_resumes_identically(adapters, one_process, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_eval(*_args(adapters, out, "--processes", "2")), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not list((out / "pairs").rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ranks = _ranks(proc.pid)
        assert len(ranks) == 2, "the run ended before a rank could be killed"
        os.kill(ranks[-1].pid, signal.SIGKILL)  # the last-started rank
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "killed by signal 9 (SIGKILL)" in errors[0], stderr[-2000:]
    assert "of 2 failed" in errors[0] and "the same command resumes" in errors[0]
    assert "Traceback" not in stderr
    finished = sorted((out / "pairs").rglob("*.json"))
    assert 1 <= len(finished) < 4, "the kill should land mid-run"
    for pair in finished:  # nothing half-written: every pair file is whole, with its predictions
        result = json.loads(pair.read_text())
        assert (out / result["predictions"]).read_text().count("\n") == LIMIT
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    assert not (out / "results.json").exists()

    rerun = subprocess.run(_eval(*_args(adapters, out, "--processes", "2")), cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # finished pairs were not redone
    assert_same_outputs(one_process, out)


def _stuck_rank_1() -> str:
    """Rank 1 stays alive but never reaches the collective; rank 0 must give up after the timeout."""
    from eval.world import RankLost, Ranks

    world = Ranks(timeout_s=3)
    if world.rank == 1:
        time.sleep(30)
        return "slept"
    t0 = time.monotonic()
    try:
        world.gather("outputs")
    except RankLost as exc:
        return f"{time.monotonic() - t0:.1f} {exc}"
    return "no timeout"


@pytest.mark.slow
def test_a_rank_that_hangs_alive_is_given_up_on_after_the_timeout():
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0)
    got = elastic_launch(config, _stuck_rank_1)()
    seconds, message = got[0].split(" ", 1)
    assert 3 <= float(seconds) < 20
    assert message.startswith("gathering a pair's outputs: no answer from another rank") and "\n" not in message
