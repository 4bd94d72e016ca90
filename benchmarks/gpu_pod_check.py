"""The pod path on a real GPU, in one call: every variant through the real `finetune.py`, then `python -m eval`.

On a lent GPU machine (docs/pods.md, "GPU run"; Python 3.12, torch CUDA, transformers/accelerate/peft, no
network), from the repository root with the wheels carried in wheels/gpu/:

    python benchmarks/gpu_pod_check.py --wheels wheels/gpu --out "$OUT"

It installs the carried wheels (--no-index --no-deps), builds a small random-weight Llama from the bundled
tokenizer (models/base_model/smollm2-135m-instruct/tokenizer*.json; the 98 MB GGUF is too big to carry),
trains each variant ~30 steps with `finetune.py NAME --profile auto` (bf16 16-bit, 8-bit, 4-bit, DoRA,
packing on/off, SDPA, flash-attn if it imports, DeepSpeed ZeRO-2 on one GPU if deepspeed imports), samples
nvidia-smi for the peak GPU memory, asks `--plan --json` for the estimate of the same model and batch,
evaluates the adapters with `python -m eval` on the GPU (unmerged, then merged if time is left), and writes
$OUT/gpu_pod_check.json, .md and logs.txt after every step, within --budget-s (the device tool's 600 s).

Here (with network, once): fetch the wheels into the git-ignored wheels/gpu/ (15 MiB: bitsandbytes is slimmed
to its CPU and CUDA 13 libraries, so the working tree that travels stays under the tool's 64 MiB):

    python benchmarks/gpu_pod_check.py --download-wheels wheels/gpu

On this CPU machine, to test the script itself (cpu profile, 2 steps, one variant, a few minutes):

    python benchmarks/gpu_pod_check.py --cpu-smoke --out /tmp/pod-smoke
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO / "models" / "base_model" / "smollm2-135m-instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
DATASET = REPO / "data" / "train" / "fpb_train.jsonl"
# What the GPU machine lacks (issue 10): these five, plus what `import axolotl.cli.train, axolotl.train, lora.cli.verbs.train,
# eval.engine` needs beyond torch/transformers/accelerate/peft and their requirements (found on the CPU machine
# in a venv holding only those, adding each missing module until the import worked), pinned to the versions
# tested here. Not carried, because the GPU image already has them (the device tool's KINDS.md package list,
# read 2026-11-17): tensorboard, xxhash, python-dateutil, six, and the big ones the import also needs (pandas,
# pyarrow, numba + llvmlite); the report's import probe names the first module missing if that changes.
# --no-deps: pip never resolves (no network there).
WHEELS = ("axolotl==0.19.0", "trl==1.9.0", "datasets==4.8.4", "peft==0.20.0", "bitsandbytes==0.50.2")
EXTRA_WHEELS = ("fire==0.7.1", "termcolor==3.3.0", "addict==2.4.0", "multiprocess==0.70.19", "dill==0.4.1",
                "posthog==6.7.11", "backoff==2.2.1", "distro==1.9.0", "fastcore==2.2.39",
                "kernels==0.16.2", "kernels-data==0.16.2", "pytz==2026.6",
                "pydantic==2.12.5", "pydantic_core==2.41.5", "typing-inspection==0.4.5", "annotated-types==0.8.0")
PYTHON_VERSION = "3.12"
# bitsandbytes 0.50.2 ships manylinux_2_24 only: --platform manylinux2014_x86_64 alone finds no wheel
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
# The device tool's limits (its README): the working tree that travels (tracked and untracked-not-ignored files
# plus the carried paths) is at most 64 MiB, and one command runs at most 600 s, so the default --budget-s ends
# the run with time to spare for writing the report; what is under $OUT comes back even when a run is killed.
TRAVEL_LIMIT_BYTES = 64 * 2**20
CARRY = ("wheels/gpu", *(f"models/base_model/smollm2-135m-instruct/{f}" for f in TOKENIZER_FILES))
BUDGET_S = 540
EVAL_RESERVE_S = 120  # kept back from training for the first (unmerged) eval of every adapter


@dataclass(frozen=True)
class Variant:
    name: str
    entry: dict  # keys over BASE_ENTRY
    needs: str | None = None  # a module that must import, else the variant is skipped (not failed)
    flags: tuple[str, ...] = ()


BASE_ENTRY = {
    "defaults": "tuned", "lora_r": 8, "lora_alpha": 16, "learning_rate": 0.0002, "batch_size": 4,
    "gradient_accumulation_steps": 1, "sequence_len": 512, "logging_steps": 1, "prompt_format": "chatml",
    "profile": "a5000x1", "val_set_size": 0, "attention": "sdpa",
}
VARIANTS = (
    Variant("bf16", {"quant_bits": 16}),
    Variant("int8", {"quant_bits": 8}),
    Variant("nf4", {"quant_bits": 4}),
    Variant("dora_int8", {"quant_bits": 8, "peft_use_dora": True}),
    Variant("bf16_unpacked", {"quant_bits": 16, "sample_packing": False}),
    Variant("bf16_flash", {"quant_bits": 16, "attention": "flash_attention_2"}, needs="flash_attn"),
    Variant("bf16_zero2", {"quant_bits": 16, "zero_stage": 2}, needs="deepspeed"),
)


def registry_entries(model_dir: Path, steps: int, variants=VARIANTS, cpu: bool = False) -> dict[str, dict]:
    """One registry entry per variant, named gpu_check_<variant> (absolute paths: the registry lives in $OUT)."""
    entries = {}
    for v in variants:
        entry = {**BASE_ENTRY, "base_model": str(model_dir), "dataset_path": str(DATASET), "max_steps": steps,
                 **v.entry}
        if cpu:
            entry.update(profile="cpu", sequence_len=256, batch_size=2)
        entries[f"gpu_check_{v.name}"] = entry
    return entries


# ---------------------------------------------------------------- the tiny model


def tiny_llama(vocab_size: int, *, attn_implementation: str = "sdpa", seed: int = 0, hidden: int = 64,
               layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128):
    """A random-weight Llama with the given vocabulary (fp32); small enough for CPU tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2)
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config)


def build_model_folder(out: Path, *, hidden: int = 512, layers: int = 8, heads: int = 8, kv_heads: int = 4,
                       intermediate: int = 1536) -> Path:
    """Save a random Llama (~50M parameters with the 49k vocabulary) with the bundled tokenizer into `out`."""
    from transformers import AutoTokenizer

    missing = [f for f in TOKENIZER_FILES[:2] if not (TOKENIZER_DIR / f).is_file()]
    if missing:
        raise SystemExit(f"error: {TOKENIZER_DIR} lacks {', '.join(missing)}: carry them (docs/pods.md)")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    model = tiny_llama(len(tokenizer), hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                       intermediate=intermediate)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (TOKENIZER_DIR / name).is_file():
            shutil.copy2(TOKENIZER_DIR / name, out / name)
    return out


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


# ---------------------------------------------------------------- running


def run(argv: list[str], env: dict, timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out, err = (b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (exc.stdout, exc.stderr))
        code, text = 124, f"{out}{err}\ntimed out after {timeout:.0f} s"
    return code, text, time.monotonic() - start


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def variant_timeout(left_s: float, reserve_s: float, past_seconds: list[float], cap_s: float,
                    floor_s: float = 60) -> int | None:
    """Seconds the next training run may take, or None when it would eat the time kept for the eval: it needs
    at least the slowest run so far (plus a fifth), and never less than `floor_s` (axolotl's start alone)."""
    room = left_s - reserve_s
    need = max(floor_s, 1.2 * max(past_seconds, default=0))
    return int(min(cap_s, room)) if room >= need else None


def train_variant(v: Variant, name: str, entry: dict, registry: Path, work: Path, env: dict, profile: str,
                  timeout: int) -> Result:
    common = [name, "--config-json", str(registry), "--profile", profile, "--recipes-dir", str(work / "recipes"),
              "--adapters-dir", str(work / "adapters")]
    result = Result(v.name, "failed")
    try:
        planned = subprocess.run([sys.executable, "finetune.py", *common, "--plan", "--json"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=min(timeout, 120))
        if planned.returncode == 0:
            plan = json.loads(planned.stdout)
            result.plan_peak_gib, result.plan_allocated_gib = plan["peak_gb_per_gpu"], plan["peak_allocated_gb"]
        else:
            result.note = f"--plan failed: {tail(planned.stderr, 3)}"
    except subprocess.TimeoutExpired:
        result.note = "--plan timed out"
    argv = [sys.executable, "finetune.py", *common, *v.flags]
    result.command = ["python", *argv[1:]]
    with GpuMemorySampler() as sampler:
        code, text, seconds = run(argv, env, timeout)
    result.seconds = round(seconds, 1)
    result.preflight = [line for line in text.splitlines() if re.match(r"^(ok|note|FAIL)\s{1,4}\w+:", line)]
    metrics = train_metrics(text)
    result.samples_per_second = metrics.get("train_samples_per_second")
    result.train_loss = metrics.get("train_loss")
    result.tokens_per_second = tokens_per_second(metrics, entry)
    result.peak_gpu_mib = max(sampler.peak_mib.values()) if sampler.peak_mib else None
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"{v.name}.log").write_text(text, encoding="utf-8")
    if code == 0:
        result.status = "ok"
    else:
        result.error_tail = tail(text)
    return result


def generate_seconds(results_json: Path) -> float | None:
    """Wall seconds the adapters spent generating (eval's compute phases 'generate <adapter> × <task>')."""
    if not results_json.is_file():
        return None
    phases = json.loads(results_json.read_text(encoding="utf-8")).get("compute", {}).get("phases", [])
    adapter = [p["wall_seconds"] for p in phases if p["name"].startswith("generate ")
               and not p["name"].startswith("generate base ")]
    return round(sum(adapter), 2) if adapter else None


def evaluate(adapters: list[Path], eval_dir: Path, work: Path, env: dict, timeout: float, merge: str) -> dict:
    """`python -m eval` over every trained adapter, fpb, 64 rows, the adapters merged or not (--merge-lora)."""
    if not adapters:
        return {"status": "skipped", "note": "no adapter trained"}
    argv = [sys.executable, "-m", "eval", *map(str, adapters), "--tasks", "fpb", "--limit", "64",
            "--merge-lora", merge, "--out", str(eval_dir), "--no-progress"]
    code, text, seconds = run(argv, env, timeout)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"eval_merge_{merge}.log").write_text(text, encoding="utf-8")
    result = {"status": "ok" if code == 0 else "failed", "merge_lora": merge, "seconds": round(seconds, 1),
              "adapter_generate_seconds": generate_seconds(eval_dir / "results.json"),
              "command": ["python", *argv[1:]]}
    results_md = eval_dir / "results.md"
    if results_md.is_file():
        result["results_md"] = results_md.read_text(encoding="utf-8")
    if code != 0:
        result["error_tail"] = tail(text)
    return result


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


def install_wheels(folder: Path) -> dict:
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        return {"status": "failed", "note": f"no wheels in {folder}"}
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", *wheels]
    code, text, seconds = run(argv, dict(os.environ), 300)
    out = {"status": "ok" if code == 0 else "failed", "wheels": [Path(w).name for w in wheels],
           "seconds": round(seconds, 1)}
    if code != 0:
        out["error_tail"] = tail(text)
    return out


PROBED = ("torch", "transformers", "accelerate", "peft", "axolotl", "trl", "datasets", "bitsandbytes", "deepspeed",
          "flash_attn")
# One interpreter for every version (each a separate `python -c` costs a torch import, ~10 s, of the budget).
_VERSIONS = """
import importlib, json
found = {}
for name in %r:
    try:
        found[name] = getattr(importlib.import_module(name), "__version__", "imports, no __version__")
    except Exception:
        found[name] = None
print("VERSIONS " + json.dumps(found))
""" % (PROBED,)


def environment() -> dict:
    """Versions of PROBED (None: does not import; the variants that need flash_attn or deepspeed read this),
    and nvidia-smi's GPUs."""
    facts: dict = {"python": sys.version.split()[0]}
    code, text, _ = run([sys.executable, "-c", _VERSIONS], dict(os.environ), 180)
    found = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("VERSIONS ")]
    facts.update(json.loads(found[-1]) if found else dict.fromkeys(PROBED))
    code, text, _ = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                        dict(os.environ), 60) if shutil.which("nvidia-smi") else (1, "", 0)
    facts["gpus"] = text.strip().splitlines() if code == 0 else []
    return facts


def import_probe() -> dict:
    """Does the training path import? If not, the module that is missing (the next wheel to carry)."""
    code, text, _ = run([sys.executable, "-c", "import axolotl.cli.train, axolotl.train, lora.cli.verbs.train, eval.engine"],
                        dict(os.environ), 300)
    missing = re.findall(r"No module named '([\w.]+)'", text)
    return {"ok": code == 0, "missing": missing[-1] if missing else None, "error_tail": None if code == 0 else tail(text, 8)}


def installed() -> list[str]:
    code, text, _ = run([sys.executable, "-m", "pip", "list", "--format=freeze"], dict(os.environ), 120)
    return text.split() if code == 0 else []


# ---------------------------------------------------------------- the report


def _eval_line(e: dict) -> str:
    took = []
    if e.get("seconds"):
        took.append(f"{e['seconds']} s")
    if e.get("adapter_generate_seconds"):
        took.append(f"adapters generating {e['adapter_generate_seconds']} s")
    line = f"Eval, --merge-lora {e.get('merge_lora', 'off')}: {e.get('status')}"
    return line + (f" ({', '.join(took)})" if took else "") + (f"; {e['note']}" if e.get("note") else "")


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    lines = [f"# GPU pod check ({report['started']}, {report['mode']})", "",
             f"Command: `{report['command']}`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpus" and v),
             "", "GPUs: " + ("; ".join(env.get("gpus") or []) or "none"), "",
             f"Model: {report.get('model', '(not built yet)')}", "",
             "| variant | status | s | tokens/s (packed) | samples/s | peak GPU MiB (nvidia-smi) | plan peak GiB | "
             "measured / plan | train loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    results = report.get("results") or []
    for r in results:
        ratio = (f"{r['peak_gpu_mib'] / 1024 / r['plan_peak_gib']:.2f}"
                 if r.get("peak_gpu_mib") and r.get("plan_peak_gib") else "")
        cells = [r["variant"], r["status"], r.get("seconds"), r.get("tokens_per_second"),
                 r.get("samples_per_second"), r.get("peak_gpu_mib"), r.get("plan_peak_gib"), ratio,
                 r.get("train_loss")]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    evals = {"eval": report.get("eval") or {}, "eval_merged": report.get("eval_merged") or {}}
    if not evals["eval"]:
        lines += ["", "Eval: not reached (the run was stopped or is still going)"]
    lines += [""] + [_eval_line(e) for e in evals.values() if e]
    same = report.get("merge_comparison")
    if same:
        lines += ["", f"Merged vs unmerged: {same['same_output']}/{same['rows']} adapter answers identical"]
    if evals["eval"].get("results_md"):
        lines += ["", evals["eval"]["results_md"]]
    failures = [r for r in results if r.get("error_tail")] + \
        [{"variant": name, **e} for name, e in evals.items() if e.get("error_tail")]
    if (report.get("install") or {}).get("error_tail"):
        failures.insert(0, {"variant": "install", **report["install"]})
    probe = report.get("import_probe") or {}
    if probe.get("error_tail"):
        failures.insert(0, {"variant": f"import (missing: {probe.get('missing')})", "error_tail": probe["error_tail"]})
    if failures:
        lines += ["", "## Failures", ""]
        for f in failures:
            lines += [f"### {f['variant']}", "", "```", f["error_tail"], "```", ""]
    skipped = [f"{r['variant']} ({r['note']})" for r in results if r["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped: " + ", ".join(skipped)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, out: Path, logs: Path | None = None, log_lines: int = 200) -> None:
    """gpu_pod_check.json and .md, and logs.txt (the last lines of every log): three files, since the device
    tool brings back at most 8 from $OUT and none deeper than two folders."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_pod_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_pod_check.md").write_text(markdown(report), encoding="utf-8")
    if logs is not None and logs.is_dir():
        parts = [f"===== {f.name} (last {log_lines} lines)\n{tail(f.read_text(encoding='utf-8'), log_lines)}\n"
                 for f in sorted(logs.glob("*.log"))]
        (out / "logs.txt").write_text("\n".join(parts), encoding="utf-8")


# ---------------------------------------------------------------- wheels, here


def download_command(dest: Path) -> list[str]:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            *platforms, "--no-deps", "-d", str(dest), *WHEELS, *EXTRA_WHEELS]


def travel_bytes(repo: Path, carried: tuple[str, ...]) -> int:
    """What the device tool sends: tracked and untracked-not-ignored files, plus the carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    files = {repo / f for f in listed if f}
    for c in carried:
        path = repo / c
        files |= set(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else {path}
    return sum(f.stat().st_size for f in files if f.is_file())


_BNB_LIB = re.compile(r"^bitsandbytes/libbitsandbytes_(?P<backend>[a-z]+)(?P<version>\d*)\.so$")


def keep_bnb_member(name: str, cuda_major: str) -> bool:
    """bitsandbytes ships a native library per CUDA, ROCm and XPU version (130 MB unpacked, 43 MB packed, most
    of the carry limit); it loads the one for torch's CUDA, falling back within the same major version only.
    Keep the CPU one and those of `cuda_major` (the GPU machine's torch is +cu130: KINDS.md)."""
    m = _BNB_LIB.match(name)
    if m is None:
        return True
    return m["backend"] == "cpu" or (m["backend"] == "cuda" and m["version"].startswith(cuda_major))


def slim_wheel(wheel: Path, keep) -> int:
    """Rewrite `wheel` in place without the members `keep(name)` rejects (their RECORD lines too); returns
    the number dropped. pip installs the result as it would the original."""
    import zipfile

    tmp = wheel.with_suffix(".slim")
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        kept = [i for i in src.infolist() if keep(i.filename)]
        dropped = len(src.infolist()) - len(kept)
        names = {i.filename for i in kept}
        for info in kept:
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "".join(f"{line}\n" for line in lines if line.split(",", 1)[0] in names
                               or line.split(",", 1)[0].endswith("RECORD")).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return dropped


def download_wheels(dest: Path, cuda_major: str = "13") -> int:
    dest.mkdir(parents=True, exist_ok=True)
    code = subprocess.run(download_command(dest), cwd=REPO).returncode
    for wheel in dest.glob("bitsandbytes-*.whl"):
        slim_wheel(wheel, lambda name: keep_bnb_member(name, cuda_major))
    wheels = sorted(dest.glob("*.whl"))
    travel = travel_bytes(REPO, CARRY)
    print(f"{dest}: {len(wheels)} wheels, {sum(p.stat().st_size for p in wheels) / 2**20:.1f} MiB; the working "
          f"tree with them and the tokenizer: {travel / 2**20:.1f} MiB of the device tool's "
          f"{TRAVEL_LIMIT_BYTES // 2**20} MiB")
    if travel > TRAVEL_LIMIT_BYTES:
        print(f"error: {travel / 2**20:.1f} MiB would not travel; carry fewer wheels (WHEELS, EXTRA_WHEELS)",
              file=sys.stderr)
        return 1
    return code


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_pod_check_out")))
    p.add_argument("--wheels", type=Path, help="install these wheels first (--no-index --no-deps)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--variants", help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    p.add_argument("--cpu-smoke", action="store_true", help="cpu profile, 2 steps, bf16 only: test this script")
    p.add_argument("--download-wheels", type=Path, metavar="DIR", help="fetch the wheels here and exit")
    p.add_argument("--cuda-major", default="13", help="with --download-wheels: the CUDA major version of the GPU "
                   "machine's torch; bitsandbytes keeps only those native libraries (default 13: torch +cu130)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per training run at most")
    p.add_argument("--budget-s", type=int, default=BUDGET_S,
                   help="the whole run's seconds: variants that would not leave time for the eval are skipped "
                        f"(default {BUDGET_S}: the device tool stops a command at 600 s)")
    args = p.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels, args.cuda_major)
    deadline = time.monotonic() + args.budget_s
    chosen = [v for v in VARIANTS if not args.variants or v.name in args.variants.split(",")]
    steps, profile = args.steps, "auto"
    if args.cpu_smoke:
        chosen, steps, profile = [VARIANTS[0]], 2, "cpu"
    out = args.out.resolve()
    work = out / "work" if args.cpu_smoke else REPO / "lora_adapters" / "gpu_pod_check"  # adapters stay out of $OUT
    shutil.rmtree(work, ignore_errors=True)  # this script's own throwaway folder: a rerun trains and evaluates anew
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "cpu smoke" if args.cpu_smoke else "gpu",
                    "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])])}

    def save() -> None:  # after every step: a run stopped at the device's limit still reports what it did
        write_report(report, out, work / "logs")

    report["install"] = install_wheels(args.wheels) if args.wheels else {"status": "not asked"}
    report["environment"] = environment()
    report["installed"] = installed()  # what the machine had: tells the next session which wheels to carry
    report["import_probe"] = import_probe()
    save()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1",
           "DO_NOT_TRACK": "1"}
    model_dir = work / "tiny-llama"
    small = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128) if args.cpu_smoke else {}
    build_model_folder(model_dir, **small)
    report["model"] = f"random Llama {small or 'hidden 512, 8 layers, 8 heads (4 kv), 1536 MLP'}, bundled tokenizer"
    entries = registry_entries(model_dir, steps, chosen, cpu=args.cpu_smoke)
    registry = work / "registry.json"
    registry.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    results: list[Result] = []
    for v in chosen:
        name = f"gpu_check_{v.name}"
        timeout = variant_timeout(deadline - time.monotonic(), EVAL_RESERVE_S,
                                  [r.seconds for r in results if r.seconds], args.timeout)
        if v.needs and report["environment"].get(v.needs) is None:  # the probe above imported it, or could not
            r = Result(v.name, "skipped", note=f"{v.needs} does not import here")
        elif timeout is None:
            r = Result(v.name, "skipped", note=f"out of time (--budget-s {args.budget_s})")
        else:
            r = train_variant(v, name, entries[name], registry, work, env, profile, timeout)
        print(f"{v.name}: {r.status} {r.seconds or ''} s", flush=True)
        results.append(r)
        report["results"] = [asdict(r) for r in results]
        save()
    trained = [work / "adapters" / f"gpu_check_{r.variant}" for r in results if r.status == "ok"]
    unmerged, merged = work / "eval", work / "eval_merged"
    report["eval"] = evaluate(trained, unmerged, work, env, max(30, deadline - time.monotonic()), "off")
    save()
    # The same rows with every adapter merged into the bf16 base (--merge-lora on; auto keeps CUDA unmerged
    # because this was never measured there): only if the first eval left time for a second.
    left = deadline - time.monotonic()
    if report["eval"]["status"] == "ok" and left > 1.2 * report["eval"]["seconds"]:
        report["eval_merged"] = evaluate(trained, merged, work, env, left, "on")
        if report["eval_merged"]["status"] == "ok":
            report["merge_comparison"] = compare_predictions(unmerged, merged)
    else:
        why = f"{left:.0f} s left" if report["eval"]["status"] == "ok" else f"the unmerged eval: {report['eval']['status']}"
        report["eval_merged"] = {"status": "skipped", "merge_lora": "on", "note": why}
    save()
    print(f"report: {out / 'gpu_pod_check.md'}")
    return 0 if all(r.status != "failed" for r in results) and report["eval"]["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
