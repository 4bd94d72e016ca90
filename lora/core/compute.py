"""Compute tracking: peak memory, mean CPU/GPU utilisation and wall time per phase of a run.

    python finetune.py sentiment_smollm2_cpu     # run.json "compute": the training child's process tree
    python -m eval lora_adapters/x --out r       # results.json "compute": base load, generate, scoring
    python finetune.py --list                    # "last run" column: wall time and peak RSS

A `Sampler` thread reads a process tree every `interval` seconds with psutil: the RSS summed over the
root and all its descendants (accelerate's workers, torchrun ranks), and their CPU seconds; on a machine
with an NVIDIA GPU, pynvml's device memory in use and utilisation. `phase(name)` brackets a part of the
run (a sample is taken at both ends, so a phase shorter than the interval still has two); `summarise` is
pure (samples in, one PhaseCompute out) and is what the tests feed with fake samples.

What the numbers mean: peak RSS is the highest sampled sum (a peak shorter than the interval can be
missed; resident memory counts shared pages once per process). CPU is the tree's CPU seconds over the
phase's wall time, as a percentage of the machine's cores (100 = every core busy all the time), plus the
mean number of busy cores. GPU memory is the device's memory in use (all processes on it, as nvidia-smi
shows it) and GPU utilisation is nvidia-smi's "busy" percentage, averaged over the samples; with several
GPUs, memory is summed and utilisation averaged over the devices.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_INTERVAL = 0.5  # seconds; a sample costs ~1 ms per process in the tree


@dataclass(frozen=True)
class Sample:
    """One reading of the process tree (and the GPUs) at monotonic time t."""

    t: float
    rss_bytes: int  # summed over the tree
    cpu_seconds: float  # cumulative user+system seconds the tree has used since the sampler started
    gpu_memory_bytes: int | None = None  # summed over the GPUs; None: no GPU (or no NVML)
    gpu_util_percent: float | None = None  # mean over the GPUs


class PhaseCompute(BaseModel):
    """What one phase of a run used."""

    model_config = ConfigDict(extra="forbid")

    name: str
    wall_seconds: float
    peak_rss_bytes: int | None = Field(default=None, description="highest sampled RSS of the process tree")
    cpu_percent: float | None = Field(default=None, description="mean CPU use, % of all the machine's cores")
    cpu_cores: float | None = Field(default=None, description="mean busy cores (CPU seconds / wall seconds)")
    peak_gpu_memory_bytes: int | None = None
    gpu_util_percent: float | None = None
    samples: int = 0


class ComputeRecord(BaseModel):
    """A run's compute: the whole run (`total`) and each phase, in order."""

    model_config = ConfigDict(extra="forbid")

    interval_seconds: float
    cpu_count: int
    gpus: list[str] = Field(default_factory=list, description="GPU names NVML reported; empty: none sampled")
    total: PhaseCompute
    phases: list[PhaseCompute] = Field(default_factory=list)


def summarise(name: str, samples: list[Sample], wall_seconds: float, cpu_count: int) -> PhaseCompute:
    """Pure: one phase's samples (in time order) -> its peak memory and mean utilisation."""
    rss = [s.rss_bytes for s in samples]
    gpu_mem = [s.gpu_memory_bytes for s in samples if s.gpu_memory_bytes is not None]
    gpu_util = [s.gpu_util_percent for s in samples if s.gpu_util_percent is not None]
    cores = None
    span = samples[-1].t - samples[0].t if len(samples) >= 2 else 0.0
    if span > 0:
        cores = max(0.0, samples[-1].cpu_seconds - samples[0].cpu_seconds) / span
    return PhaseCompute(
        name=name, wall_seconds=round(wall_seconds, 3),
        peak_rss_bytes=max(rss) if rss else None,
        cpu_percent=round(100.0 * cores / max(cpu_count, 1), 1) if cores is not None else None,
        cpu_cores=round(cores, 3) if cores is not None else None,
        peak_gpu_memory_bytes=max(gpu_mem) if gpu_mem else None,
        gpu_util_percent=round(sum(gpu_util) / len(gpu_util), 1) if gpu_util else None,
        samples=len(samples),
    )


def between(samples: list[Sample], t0: float, t1: float) -> list[Sample]:
    return [s for s in samples if t0 <= s.t <= t1]


# ---------------------------------------------------------------- reading the machine


class TreeReader:
    """RSS and cumulative CPU seconds of a process and all its descendants. CPU seconds are accumulated
    per process (a process seen once and gone keeps what it used up to its last reading)."""

    def __init__(self, pid: int, from_start: bool = False):
        self.pid = pid
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last seen cpu seconds
        self._base: dict[tuple[int, float], float] = {}  # cpu seconds already used when first seen
        # from_start (a child just started): every process counts from its start; else the processes of the
        # first reading count from then (this process has been running) and later ones from their start
        self._first = not from_start

    def read(self) -> tuple[int, float]:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    mem = p.memory_info().rss
                    times = p.cpu_times()
                    key = (p.pid, p.create_time())
            except psutil.Error:  # exited between listing and reading
                continue
            rss += mem
            used = times.user + times.system
            self._base.setdefault(key, used if self._first else 0.0)
            self._cpu[key] = used
        self._first = False
        return rss, sum(v - self._base[k] for k, v in self._cpu.items())


class GpuReader:
    """Device memory in use and utilisation through NVML; `available` False without a GPU or driver."""

    def __init__(self):
        self.handles: list = []
        self.names: list[str] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                self.handles.append(h)
                name = pynvml.nvmlDeviceGetName(h)
                self.names.append(name.decode() if isinstance(name, bytes) else str(name))
        except Exception:  # noqa: BLE001 - no library, no driver, no device: no GPU numbers
            self.handles, self.names = [], []

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def read(self) -> tuple[int | None, float | None]:
        if not self.handles:
            return None, None
        import pynvml

        try:
            mem = sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in self.handles)
            util = [float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self.handles]
        except Exception:  # noqa: BLE001 - a transient NVML error loses one sample, not the run
            return None, None
        return mem, sum(util) / len(util)


class Sampler:
    """Samples a process tree in a background thread; `phase(name)` records a named part of the run.

        with Sampler() as s:            # this process and its children
            with s.phase("base load"):
                ...
        record = s.record()

    watch(pid) switches to another root (the training child, once it is started; with wait_for_child
    nothing is sampled before). Used as a context
    manager, it is also the current sampler, so `lora.core.compute.phase(name)` works where no sampler is in
    hand (and does nothing when none runs).
    """

    def __init__(self, pid: int | None = None, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, wait_for_child: bool = False):
        self.interval = interval
        self.clock = clock
        # wait_for_child: nothing is read until watch(pid) names the root (the training child), so the
        # parent's own memory never counts as the child's
        self.reader = None if wait_for_child else TreeReader(pid if pid is not None else os.getpid())
        self.gpu = GpuReader()
        self.samples: list[Sample] = []
        self.phases: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = None
        self._token: contextvars.Token | None = None
        self._cpu_offset = 0.0

    def watch(self, pid: int) -> None:
        with self._lock:
            self.reader = TreeReader(pid, from_start=True)
            # CPU seconds stay cumulative across roots: the new tree's count starts where the old one ended
            self._cpu_offset = self.samples[-1].cpu_seconds if self.samples else 0.0
        self.sample()

    def sample(self) -> None:
        with self._lock:
            if self.reader is None:
                return
            rss, cpu = self.reader.read()
            mem, util = self.gpu.read()
            self.samples.append(Sample(self.clock(), rss, cpu + self._cpu_offset, mem, util))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> Sampler:
        self._t0 = self.clock()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="compute-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample()
        self._t1 = self.clock()

    def __enter__(self) -> Sampler:
        self._token = _current.set(self)
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        _current.reset(self._token)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.clock()  # before the first sample, so the phase's window holds it
        self.sample()
        try:
            yield
        finally:
            self.sample()
            self.phases.append((name, t0, self.clock()))

    def record(self, names: list[str] | None = None) -> ComputeRecord:
        """The whole run and each phase (those in `names` when given) summarised."""
        cpu_count = os.cpu_count() or 1
        t1 = self._t1 if self._t1 is not None else self.clock()
        with self._lock:
            samples = list(self.samples)
        total = summarise("total", samples, t1 - (self._t0 if self._t0 is not None else t1), cpu_count)
        phases = [summarise(n, between(samples, a, b), b - a, cpu_count) for n, a, b in self.phases
                  if names is None or n in names]
        return ComputeRecord(interval_seconds=self.interval, cpu_count=cpu_count, gpus=self.gpu.names,
                             total=total, phases=phases)


# A context variable, not a global: each thread sees its own sampler (eval's tests run ranks as threads,
# and a global would send one thread's phases to another's sampler and outlive it).
_current: contextvars.ContextVar[Sampler | None] = contextvars.ContextVar("compute_sampler", default=None)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """A phase of the current sampler's run; nothing when no sampler runs (library use, tests)."""
    sampler = _current.get()
    if sampler is None:
        yield
        return
    with sampler.phase(name):
        yield


# ---------------------------------------------------------------- showing it


def human_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def short(c: PhaseCompute | dict | None) -> str:
    """'6m21s, 2.1 GB RSS' (plus GPU memory where sampled): the --list column."""
    if c is None:
        return "–"
    if isinstance(c, dict):
        c = PhaseCompute.model_validate(c)
    text = f"{human_seconds(c.wall_seconds)}, {human_bytes(c.peak_rss_bytes)} RSS"
    if c.peak_gpu_memory_bytes is not None:
        text += f", {human_bytes(c.peak_gpu_memory_bytes)} GPU"
    return text
