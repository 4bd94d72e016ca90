"""lora/core/phase_times.py: `make demo`'s phase timer, on trivial phases (a Python one-liner stands in for a phase).

    .venv/bin/python -m pytest tests/core/test_phase_times.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys

from lora.core import phase_times
from tests.conftest import REPO


def test_phases_are_timed_recorded_and_reported_last(tmp_path, capsys):
    path = tmp_path / "demo" / "phases.json"
    assert phase_times.main([str(path), "start"]) == 0
    assert phase_times.main([str(path), "run", "install", "--", sys.executable, "-c", "pass"]) == 0
    assert phase_times.main([str(path), "run", "train", "--", sys.executable, "-c", "import time; time.sleep(0.3)"]) == 0
    phases = json.loads(path.read_text())
    assert [p["name"] for p in phases] == ["install", "train"] and all(p["exit_code"] == 0 for p in phases)
    assert phases[1]["seconds"] >= 0.3
    capsys.readouterr()
    assert phase_times.main([str(path), "report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "phases (wall clock):" and lines[1].split()[0] == "install" and lines[2].split()[0] == "train"
    assert lines[-1].split()[0] == "total"


def test_a_failed_phase_passes_its_exit_code_and_prints_the_table(tmp_path, capsys):
    path = tmp_path / "phases.json"
    phase_times.main([str(path), "start"])
    assert phase_times.main([str(path), "run", "eval", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert "eval" in capsys.readouterr().err and "FAILED (exit code 3)" in phase_times.format_table(
        json.loads(path.read_text()))
    assert phase_times.main([str(path), "run", "x", "--", str(tmp_path / "no-such-program")]) == 127


def test_bad_usage_exits_2(tmp_path):
    assert phase_times.main([]) == 2
    assert phase_times.main([str(tmp_path / "p.json"), "run", "x", "echo"]) == 2  # no `--`


def test_it_runs_with_the_standard_library_alone(tmp_path):
    """make demo runs it with the system python3 before the venv exists: -S leaves site-packages out."""
    path = tmp_path / "phases.json"
    run = subprocess.run([sys.executable, "-S", "-m", "lora.core.phase_times", str(path), "start"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(path.read_text()) == []


def test_format_seconds_shows_minutes():
    assert phase_times.format_seconds(125.0).strip() == "125.0 s  (2 min 05 s)"
    assert phase_times.format_seconds(3.25).strip() == "3.2 s"
