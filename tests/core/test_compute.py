"""lora/core/compute.py: the pure summary on fake samples, and the sampler on real child processes."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lora.core import compute
from lora.core.compute import ComputeRecord, PhaseCompute, Sample, Sampler, summarise


def test_summarise_peak_and_means_from_fake_samples():
    samples = [Sample(0.0, 100, 0.0, 10, 20.0), Sample(1.0, 300, 1.0, 50, 60.0), Sample(2.0, 200, 3.0, 30, 40.0)]
    s = summarise("train", samples, wall_seconds=2.0, cpu_count=4)
    assert s.peak_rss_bytes == 300
    assert s.cpu_cores == 1.5  # 3 CPU seconds over 2 s
    assert s.cpu_percent == 37.5  # of 4 cores
    assert s.peak_gpu_memory_bytes == 50
    assert s.gpu_util_percent == 40.0
    assert s.samples == 3 and s.wall_seconds == 2.0


def test_summarise_without_gpu_or_enough_samples_says_unknown():
    one = summarise("x", [Sample(5.0, 7, 1.0)], wall_seconds=0.1, cpu_count=2)
    assert one.peak_rss_bytes == 7
    assert one.cpu_percent is None and one.cpu_cores is None  # no span to divide by
    assert one.peak_gpu_memory_bytes is None and one.gpu_util_percent is None
    none = summarise("y", [], wall_seconds=0.0, cpu_count=2)
    assert none.peak_rss_bytes is None and none.samples == 0


def test_between_selects_the_phase_window():
    samples = [Sample(t, 1, 0.0) for t in (0.0, 1.0, 2.0, 3.0)]
    assert [s.t for s in compute.between(samples, 1.0, 2.0)] == [1.0, 2.0]


def test_sampler_sees_a_child_tree_memory_and_cpu():
    """A child that starts a grandchild holding ~200 MB and spinning: the tree's RSS and CPU include it."""
    grandchild = "b = bytearray(200 * 1024 * 1024)\nimport time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    with Sampler(interval=0.05) as s:
        proc = subprocess.Popen([sys.executable, "-c", child])
        s.watch(proc.pid)
        with s.phase("child"):
            proc.wait()
    rec = s.record()
    phase = rec.phases[0]
    assert phase.name == "child"
    assert phase.peak_rss_bytes > 200 * 1024 * 1024
    assert phase.cpu_cores > 0.1  # it spun for 1.5 s (loose: the machine is shared)
    assert rec.total.wall_seconds >= phase.wall_seconds > 1.0
    assert ComputeRecord.model_validate(rec.model_dump()) == rec  # round-trips as run.json stores it


def test_module_phase_is_a_no_op_without_a_sampler_and_records_with_one():
    with compute.phase("nothing runs"):
        pass
    with Sampler(interval=10) as s:
        with compute.phase("load"):
            time.sleep(0.05)
    assert [p.name for p in s.record().phases] == ["load"]
    assert s.record().phases[0].samples >= 2  # both ends are sampled, however short the phase
    assert compute._current.get() is None


def test_short_column_text():
    assert compute.short(None) == "–"
    assert compute.short({"name": "train", "wall_seconds": 381, "peak_rss_bytes": 2_100_000_000}) == "6m21s, 2.1 GB RSS"
    assert "GPU" in compute.short(PhaseCompute(name="t", wall_seconds=1, peak_gpu_memory_bytes=10**9))


def test_gpu_reader_is_quiet_without_a_gpu():
    g = compute.GpuReader()
    if g.available:
        pytest.skip("this machine has an NVIDIA GPU; the no-GPU path is what is tested here")
    assert g.read() == (None, None) and g.names == []


def test_wait_for_child_reads_nothing_before_watch():
    with Sampler(interval=10, wait_for_child=True) as s:
        with s.phase("before"):
            pass
    assert s.samples == [] and s.record().phases[0].peak_rss_bytes is None
