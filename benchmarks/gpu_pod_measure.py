"""What the GPU pod check measures: peak GPU memory, the trainer's closing metrics, eval's time, merged vs unmerged.

    python benchmarks/gpu_pod_check.py --wheels wheels/gpu --out "$OUT"   # on a lent GPU machine (docs/pods.md)

nvidia-smi is sampled while a command runs (GpuMemorySampler); the rest is read from the training log and from
the eval folders. Result is one variant's row of the report.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------- measuring


class GpuMemorySampler:
    """The largest memory.used nvidia-smi reports (MiB, per GPU) while a command runs."""

    def __init__(self, interval_ms: int = 200):
        self.interval_ms, self.peak_mib, self._proc, self._thread = interval_ms, {}, None, None

    def __enter__(self):
        if shutil.which("nvidia-smi") is None:
            return self
        self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits",
                                       f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            sample = parse_memory_line(line)
            if sample is not None:
                gpu, mib = sample
                self.peak_mib[gpu] = max(mib, self.peak_mib.get(gpu, 0))

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._thread.join(timeout=5)


def parse_memory_line(line: str) -> tuple[int, int] | None:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


_TRAIN_METRICS = re.compile(r"\{[^{}]*'train_runtime'[^{}]*\}")


def train_metrics(log: str) -> dict:
    """The HF Trainer's closing metrics line ({'train_runtime': …, 'train_samples_per_second': …})."""
    found = _TRAIN_METRICS.findall(log)
    if not found:
        return {}
    out = {}
    for key, value in re.findall(r"'(\w+)': '?([-\d.e+]+)'?", found[-1]):
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def tokens_per_second(metrics: dict, entry: dict) -> float | None:
    """Packed rows are sequence_len tokens each (padding included), so samples/s x sequence_len; None unpacked."""
    if entry.get("sample_packing") is False or "train_samples_per_second" not in metrics:
        return None
    return round(metrics["train_samples_per_second"] * entry["sequence_len"], 1)


@dataclass
class Result:
    variant: str
    status: str  # "ok", "failed", "skipped"
    seconds: float | None = None
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    train_loss: float | None = None
    peak_gpu_mib: int | None = None  # nvidia-smi memory.used, max over the run (all processes on the GPU)
    plan_peak_gib: float | None = None  # finetune.py --plan --json peak_gb_per_gpu (GiB, context included)
    plan_allocated_gib: float | None = None
    preflight: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    error_tail: str | None = None
    note: str | None = None



def generate_seconds(results_json: Path) -> float | None:
    """Wall seconds the adapters spent generating (eval's compute phases 'generate <adapter> × <task>')."""
    if not results_json.is_file():
        return None
    phases = json.loads(results_json.read_text(encoding="utf-8")).get("compute", {}).get("phases", [])
    adapter = [p["wall_seconds"] for p in phases if p["name"].startswith("generate ")
               and not p["name"].startswith("generate base ")]
    return round(sum(adapter), 2) if adapter else None



def compare_predictions(a: Path, b: Path) -> dict:
    """Adapter rows whose generated text is the same in two eval folders (predictions/<model>/<task>.jsonl, by
    id); the base's rows are left out, since merging never touches them."""
    rows = same = 0
    for file_a in sorted(a.glob("predictions/*/*.jsonl")):
        file_b = b / file_a.relative_to(a)
        if file_a.parent.name == "base" or not file_b.is_file():
            continue
        outputs_b = {r["id"]: r["output"] for r in map(json.loads, file_b.read_text(encoding="utf-8").splitlines())}
        for r in map(json.loads, file_a.read_text(encoding="utf-8").splitlines()):
            if r["id"] in outputs_b:
                rows, same = rows + 1, same + (outputs_b[r["id"]] == r["output"])
    return {"rows": rows, "same_output": same}
