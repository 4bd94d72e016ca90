"""benchmarks/report.py: a benchmark's summary printed, written with --json, its work folder kept or removed.

    .venv/bin/python -m pytest tests/benchmarks/test_benchmark_report.py -q
"""
from __future__ import annotations

import json

from benchmarks.report import finish


def test_finish_prints_writes_and_removes_the_work_folder(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "x").mkdir(parents=True)
    assert finish({"ratio": 2.01}, str(tmp_path / "out.json"), work, keep=False) == 0
    assert json.loads(capsys.readouterr().out) == {"ratio": 2.01}
    assert json.loads((tmp_path / "out.json").read_text()) == {"ratio": 2.01} and not work.exists()


def test_finish_keeps_the_work_folder_when_asked(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    finish({}, None, work, keep=True)
    assert work.is_dir() and f"kept {work}" in capsys.readouterr().err
