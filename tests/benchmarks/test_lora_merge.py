"""benchmarks/lora_merge.py: bad input is one line and exit 2 (fast); a smoke run on two rows (slow).

    .venv/bin/python -m pytest tests/benchmarks/test_lora_merge.py -q
"""
from __future__ import annotations

import json

import pytest

from benchmarks.lora_merge import WAYS, main


@pytest.mark.parametrize("argv,needle", [
    (["--adapter", "{tmp}"], "no adapter_config.json"),
    (["--limit", "0"], "--limit 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


@pytest.mark.slow
def test_smoke_run_reports_every_way_and_merged_equals_unmerged_in_fp32(tmp_path):
    out = tmp_path / "m.json"
    assert main(["--tasks", "fpb", "--limit", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    fp32 = summary["runs"]["fp32 fpb"]
    assert set(fp32["seconds"]) == set(WAYS) and all(v > 0 for v in fp32["seconds"].values())
    # fp32, a small adapter: merging changes rounding only, far below what would flip a greedy token here
    assert fp32["merged_outputs_equal_unmerged"] == "2/2"
