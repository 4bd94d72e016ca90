"""The pod path on a real GPU, in one call: every variant through the real `finetune.py`, then `python -m eval`.

On a lent GPU machine (docs/pods.md, "GPU run"; Python 3.12, torch CUDA, transformers/accelerate/peft, no
network), from the repository root with the wheels carried in wheels/gpu/:

    python benchmarks/gpu_pod_check.py --wheels wheels/gpu --out "$OUT"

It installs the carried wheels (--no-index --no-deps), builds a small random-weight Llama from the bundled
tokenizer (models/base_model/smollm2-135m-instruct/tokenizer*.json; the 98 MB GGUF is too big to carry),
trains each variant ~30 steps with `finetune.py NAME --profile auto` (bf16 16-bit, 8-bit, 4-bit, DoRA,
packing on/off, SDPA, flash-attn if it imports, DeepSpeed ZeRO-2 on one GPU if deepspeed imports), samples
nvidia-smi for the peak GPU memory, asks `--plan --json` for the estimate of the same model and batch,
evaluates the adapters with `python -m eval` on the GPU, and writes $OUT/gpu_pod_check.json and .md with
every failure's last lines.

Here (with network, once): fetch the wheels into the git-ignored wheels/gpu/ (~50 MB):

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
# What the GPU machine lacks (issue 10): these five, plus what `import axolotl.cli.train, axolotl.train, lora.cli,
# eval.engine` needs beyond torch/transformers/accelerate/peft and their requirements (found on the CPU machine
# in a venv holding only those, adding each missing module until the import worked), pinned to the versions
# tested here, and tensorboard (recipes log to it). Measured total 55.6 MiB. Also needed by that import but
# too big to carry (pandas 12 MB, pyarrow 42 MB, numba + llvmlite 46 MB): the machine must have them; the
# report's import probe names the first one missing. --no-deps: pip never resolves (no network there).
WHEELS = ("axolotl==0.19.0", "trl==1.9.0", "datasets==4.8.4", "peft==0.20.0", "bitsandbytes==0.50.2")
EXTRA_WHEELS = ("fire==0.7.1", "termcolor==3.3.0", "addict==2.4.0", "multiprocess==0.70.19", "dill==0.4.1",
                "xxhash==4.1.0", "posthog==6.7.11", "backoff==2.2.1", "distro==1.9.0", "fastcore==2.2.39",
                "kernels==0.16.2", "kernels-data==0.16.2", "python-dateutil==2.9.0.post0", "pytz==2026.6",
                "six==1.17.0", "pydantic==2.12.5", "pydantic_core==2.41.5", "typing-inspection==0.4.5",
                "annotated-types==0.8.0", "tensorboard==2.21.0")
PYTHON_VERSION = "3.12"
# bitsandbytes 0.50.2 ships manylinux_2_24 only: --platform manylinux2014_x86_64 alone finds no wheel
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
MAX_WHEELS_MB = 60


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


def run(argv: list[str], env: dict, timeout: int) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, text = 124, f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout} s"
    return code, text if isinstance(text, str) else text.decode(errors="replace"), time.monotonic() - start


def importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def train_variant(v: Variant, name: str, entry: dict, registry: Path, work: Path, env: dict, profile: str,
                  timeout: int) -> Result:
    if v.needs and not importable(v.needs):
        return Result(v.name, "skipped", note=f"{v.needs} does not import here")
    common = [name, "--config-json", str(registry), "--profile", profile, "--recipes-dir", str(work / "recipes"),
              "--adapters-dir", str(work / "adapters")]
    result = Result(v.name, "failed")
    planned = subprocess.run([sys.executable, "finetune.py", *common, "--plan", "--json"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    if planned.returncode == 0:
        plan = json.loads(planned.stdout)
        result.plan_peak_gib, result.plan_allocated_gib = plan["peak_gb_per_gpu"], plan["peak_allocated_gb"]
    else:
        result.note = f"--plan failed: {tail(planned.stderr, 3)}"
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


def evaluate(adapters: list[Path], out: Path, work: Path, env: dict, timeout: int) -> dict:
    if not adapters:
        return {"status": "skipped", "note": "no adapter trained"}
    argv = [sys.executable, "-m", "eval", *map(str, adapters), "--tasks", "fpb", "--limit", "64",
            "--out", str(out / "eval"), "--no-progress"]
    code, text, seconds = run(argv, env, timeout)
    (work / "logs" / "eval.log").write_text(text, encoding="utf-8")
    result = {"status": "ok" if code == 0 else "failed", "seconds": round(seconds, 1),
              "command": ["python", *argv[1:]]}
    results_md = out / "eval" / "results.md"
    if results_md.is_file():
        result["results_md"] = results_md.read_text(encoding="utf-8")
    if code != 0:
        result["error_tail"] = tail(text)
    return result


def install_wheels(folder: Path) -> dict:
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        return {"status": "failed", "note": f"no wheels in {folder}"}
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", *wheels]
    code, text, seconds = run(argv, dict(os.environ), 600)
    out = {"status": "ok" if code == 0 else "failed", "wheels": [Path(w).name for w in wheels],
           "seconds": round(seconds, 1)}
    if code != 0:
        out["error_tail"] = tail(text)
    return out


def environment() -> dict:
    facts: dict = {"python": sys.version.split()[0]}
    for module in ("torch", "transformers", "accelerate", "peft", "axolotl", "trl", "datasets", "bitsandbytes",
                   "deepspeed", "flash_attn"):
        code, text, _ = run([sys.executable, "-c", f"import {module}; print('VERSION', {module}.__version__)"],
                            dict(os.environ), 120)
        found = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("VERSION ")]
        facts[module] = found[-1] if code == 0 and found else None
    code, text, _ = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                        dict(os.environ), 60) if shutil.which("nvidia-smi") else (1, "", 0)
    facts["gpus"] = text.strip().splitlines() if code == 0 else []
    return facts


def import_probe() -> dict:
    """Does the training path import? If not, the module that is missing (the next wheel to carry)."""
    code, text, _ = run([sys.executable, "-c", "import axolotl.cli.train, axolotl.train, lora.cli, eval.engine"],
                        dict(os.environ), 300)
    missing = re.findall(r"No module named '([\w.]+)'", text)
    return {"ok": code == 0, "missing": missing[-1] if missing else None, "error_tail": None if code == 0 else tail(text, 8)}


def installed() -> list[str]:
    code, text, _ = run([sys.executable, "-m", "pip", "list", "--format=freeze"], dict(os.environ), 120)
    return text.split() if code == 0 else []


# ---------------------------------------------------------------- the report


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU pod check ({report['started']}, {report['mode']})", "",
             f"Command: `{report['command']}`", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpus" and v),
             "", "GPUs: " + ("; ".join(env.get("gpus") or []) or "none"), "",
             f"Model: {report['model']}", "",
             "| variant | status | s | tokens/s (packed) | samples/s | peak GPU MiB (nvidia-smi) | plan peak GiB | "
             "measured / plan | train loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        ratio = (f"{r['peak_gpu_mib'] / 1024 / r['plan_peak_gib']:.2f}"
                 if r.get("peak_gpu_mib") and r.get("plan_peak_gib") else "")
        cells = [r["variant"], r["status"], r.get("seconds"), r.get("tokens_per_second"),
                 r.get("samples_per_second"), r.get("peak_gpu_mib"), r.get("plan_peak_gib"), ratio,
                 r.get("train_loss")]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    lines += ["", f"Eval: {report['eval'].get('status')}" + (f" ({report['eval'].get('seconds')} s)"
                                                              if report["eval"].get("seconds") else "")]
    if report["eval"].get("results_md"):
        lines += ["", report["eval"]["results_md"]]
    failures = [r for r in report["results"] if r.get("error_tail")] + \
        ([{"variant": "eval", **report["eval"]}] if report["eval"].get("error_tail") else [])
    if report.get("install", {}).get("error_tail"):
        failures.insert(0, {"variant": "install", **report["install"]})
    probe = report.get("import_probe") or {}
    if probe.get("error_tail"):
        failures.insert(0, {"variant": f"import (missing: {probe.get('missing')})", "error_tail": probe["error_tail"]})
    if failures:
        lines += ["", "## Failures", ""]
        for f in failures:
            lines += [f"### {f['variant']}", "", "```", f["error_tail"], "```", ""]
    skipped = [f"{r['variant']} ({r['note']})" for r in report["results"] if r["status"] == "skipped"]
    if skipped:
        lines += ["", "Skipped: " + ", ".join(skipped)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_pod_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_pod_check.md").write_text(markdown(report), encoding="utf-8")


# ---------------------------------------------------------------- wheels, here


def download_command(dest: Path) -> list[str]:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            *platforms, "--no-deps", "-d", str(dest), *WHEELS, *EXTRA_WHEELS]


def download_wheels(dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    code = subprocess.run(download_command(dest), cwd=REPO).returncode
    total = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    print(f"{dest}: {len(list(dest.glob('*.whl')))} wheels, {total:.1f} MB (carry limit ~{MAX_WHEELS_MB} MB)")
    return code if total <= MAX_WHEELS_MB else 1


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_pod_check_out")))
    p.add_argument("--wheels", type=Path, help="install these wheels first (--no-index --no-deps)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--variants", help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    p.add_argument("--cpu-smoke", action="store_true", help="cpu profile, 2 steps, bf16 only: test this script")
    p.add_argument("--download-wheels", type=Path, metavar="DIR", help="fetch the wheels here and exit")
    p.add_argument("--timeout", type=int, default=900, help="seconds per training run")
    args = p.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels)
    chosen = [v for v in VARIANTS if not args.variants or v.name in args.variants.split(",")]
    steps, profile = args.steps, "auto"
    if args.cpu_smoke:
        chosen, steps, profile = [VARIANTS[0]], 2, "cpu"
    out = args.out.resolve()
    work = out / "work" if args.cpu_smoke else REPO / "lora_adapters" / "gpu_pod_check"  # adapters stay out of $OUT
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "cpu smoke" if args.cpu_smoke else "gpu",
                    "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])])}
    report["install"] = install_wheels(args.wheels) if args.wheels else {"status": "not asked"}
    report["environment"] = environment()
    report["installed"] = installed()  # what the machine had: tells the next session which wheels to carry
    report["import_probe"] = import_probe()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1",
           "DO_NOT_TRACK": "1"}
    model_dir = work / "tiny-llama"
    small = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128) if args.cpu_smoke else {}
    build_model_folder(model_dir, **small)
    report["model"] = f"random Llama {small or 'hidden 512, 8 layers, 8 heads (4 kv), 1536 MLP'}, bundled tokenizer"
    entries = registry_entries(model_dir, steps, chosen, cpu=args.cpu_smoke)
    registry = work / "registry.json"
    registry.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    results = []
    for v in chosen:
        name = f"gpu_check_{v.name}"
        r = train_variant(v, name, entries[name], registry, work, env, profile, args.timeout)
        print(f"{v.name}: {r.status} {r.seconds or ''} s", flush=True)
        results.append(r)
    report["results"] = [asdict(r) for r in results]
    trained = [work / "adapters" / f"gpu_check_{r.variant}" for r in results if r.status == "ok"]
    report["eval"] = evaluate(trained, out, work, env, args.timeout)
    write_report(report, out)
    print(f"report: {out / 'gpu_pod_check.md'}")
    return 0 if all(r.status != "failed" for r in results) and report["eval"]["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
