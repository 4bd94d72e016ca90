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

Its parts beside it in benchmarks/: gpu_pod_model.py (the tiny model), gpu_pod_measure.py (GPU memory, trainer
metrics, eval timings), gpu_pod_report.py (the three files) and gpu_pod_wheels.py (the carried wheels).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gpu_pod_measure import (  # noqa: E402
    GpuMemorySampler,
    Result,
    compare_predictions,
    generate_seconds,
    tokens_per_second,
    train_metrics,
)
from benchmarks.gpu_pod_model import REPO, build_model_folder  # noqa: E402
from benchmarks.gpu_pod_report import tail, write_report  # noqa: E402
from benchmarks.gpu_pod_wheels import download_wheels  # noqa: E402

DATASET = REPO / "data" / "train" / "fpb_train.jsonl"
# The device tool runs one command at most 600 s (its README), so the default --budget-s ends the run with time
# to spare for writing the report; what is under $OUT comes back even when a run is killed.
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
