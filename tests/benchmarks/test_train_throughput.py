"""benchmarks/train_throughput.py, its pure parts: row accounting, useful rows, the trainer's runtime, the entries.

    .venv/bin/python -m pytest tests/benchmarks/test_train_throughput.py -q
"""
from __future__ import annotations

from pathlib import Path

from benchmarks import train_throughput as tt
from lora.recipe.registry import parse_entry


def test_unpacked_steps_take_micro_batch_times_accumulation_rows():
    assert tt.unpacked_steps(32, 8, 2) == 2
    assert tt.unpacked_steps(33, 8, 2) == 3  # the last step takes the one row left
    assert tt.unpacked_steps(0, 8, 2) == 0


def test_packed_steps_fill_bins_to_the_efficiency_and_cap_rows_at_sequence_len():
    assert tt.packed_steps([100] * 10, 500, 1.0) == 2  # 1000 tokens in 500-token bins
    assert tt.packed_steps([100] * 10, 500, 0.5) == 4
    assert tt.packed_steps([900], 500, 1.0) == 1  # a row is cut to the bin
    assert tt.packed_steps([100] * 10, 500, 1.0, micro_batch=2) == 1


def test_rows_in_packed_steps_inverts_packing_at_the_mean_length():
    lengths = [80, 120] * 50  # mean 100
    assert tt.rows_in_packed_steps(100, lengths, 512, 0.95) == 486  # 100 · 512 · 0.95 / 100 = 486.4
    assert tt.packed_steps([100] * 486, 512, 0.95) == 100
    assert tt.rows_in_packed_steps(10, [], 512, 0.95) == 0


def test_useful_rows_are_those_that_fit_the_sequence():
    assert tt.useful([10, 600, 512, 30], 512) == (3, 552)


def test_train_runtime_reads_the_last_value_printed():
    log = ("{'loss': 2.1, 'epoch': 0.5}\n{'train_runtime': '12.3456', 'train_samples_per_second': '2.5'}\n"
           'junk {"train_runtime": 7.5, "epoch": 1.0}\n')
    assert tt.train_runtime(log) == 7.5
    assert tt.train_runtime("{'train_runtime': 41}") == 41.0
    assert tt.train_runtime("no trainer output") is None


def test_entries_are_ours_as_shipped_and_finloras_keys_only(tmp_path):
    reg = tt.entries(tmp_path / "d.jsonl", "/m")
    ours, theirs = (parse_entry(n, reg[n]) for n in ("bench_ours", "bench_finlora"))
    assert ours.resolved.sample_packing and ours.max_steps is None and ours.num_epochs == 1
    assert not theirs.resolved.sample_packing and theirs.defaults == "finlora"
    assert (theirs.batch_size, theirs.gradient_accumulation_steps, theirs.lora_r) == (8, 2, 8)
    assert set(reg["bench_finlora"]) == {"base_model", "dataset_path", "quant_bits", "num_epochs", "val_set_size",
                                         *tt.FINLORA_KEYS}
    assert Path(reg["bench_ours"]["dataset_path"]) == Path(reg["bench_finlora"]["dataset_path"]) == tmp_path / "d.jsonl"
