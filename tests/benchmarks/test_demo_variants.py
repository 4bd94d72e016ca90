"""benchmarks/demo_variants.py: the balanced, varied training file of the demo's variants (pure, fast).

    .venv/bin/python -m pytest tests/benchmarks/test_demo_variants.py -q
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

from benchmarks.demo_variants import WORDINGS, balanced_varied, main, wilson

REPO = Path(__file__).resolve().parents[2]


def test_balanced_varied_resamples_every_label_to_the_middle_class_and_varies_the_wording():
    rows = [json.loads(x) for x in (REPO / "data/train/fpb_train.jsonl").read_text().splitlines()]
    out = balanced_varied(rows)
    assert collections.Counter(r["target"] for r in out) == {"negative": 1024, "neutral": 1024, "positive": 1024}
    sentences = {r["context"].split("\nInput: ")[1] for r in rows}
    assert all(r["context"].split("\nInput: ")[1] in sentences for r in out)  # FPB's own sentences, nothing else
    used = collections.Counter(r["context"].split("sentiment of this ")[1].split("?")[0] for r in out)
    assert set(used) == set(WORDINGS) and min(used.values()) > 400
    assert balanced_varied(rows) == out and balanced_varied(rows, seed=1) != out  # seeded


def test_wilson_interval():
    assert wilson(50, 100) == "50.0% [40.4, 59.6]"
    assert wilson(0, 10) == "0.0% [0.0, 27.8]" and wilson(10, 10) == "100.0% [72.2, 100.0]"


def test_an_unknown_variant_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--variants", "demo_steps_250,demo_steps_9000", "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demo_steps_9000" in err[0] and "demo_steps_250_lr2e3" in err[0]
    assert not out.exists()
