"""Training throughput: our cpu recipe vs the recipe FinLoRA's generator makes for the same model, data and rows.

    .venv/bin/python benchmarks/train_throughput.py --json train_bench.json     # default --rows: 100 packed steps' worth
    .venv/bin/python benchmarks/train_throughput.py --rows 32                   # a smoke run, a few minutes

Both sides train the bundled SmolLM2-135M-Instruct on the first --rows rows of data/train/fpb_train.jsonl (a
copy in a temporary folder), one epoch, so both see exactly the same rows once. Both are launched through our
own `finetune.py` with a temporary registry (`--config-json`) and temporary recipes/adapters folders, so
recipes/ and lora_adapters/ are never touched:
- ours: the `sentiment_smollm2_cpu` entry of finetune_configs.json as it is (tuned defaults: sample packing,
  all-linear r=8, chatml, `--precision auto`: bf16 where the CPU has bf16 matmuls), with max_steps dropped
  and num_epochs 1 (the rows, not a step count, are what both sides share);
- FinLoRA: FinLoRA's keys only, as its sentiment entries in data/finlora/finetune_configs.json write them
  (lora_r 8, learning_rate 1e-4, batch_size 8, gradient_accumulation_steps 2), quant_bits 16 (its generator's
  16-bit path, finetune_lora_plain.py; its 8/4-bit bitsandbytes paths are not what runs on this CPU),
  num_epochs 1, so our `finlora` defaults (lora/recipe/defaults.py) fill the rest: no packing, q/k/v targets,
  sequence_len 4096, gradient checkpointing, its [INST] prompt; `--precision fp32` (its recipe's
  `bf16: auto` is fp32 on a machine without CUDA) and `--profile cpu`. One deviation, the same on both
  sides: val_set_size 0 (FinLoRA's 0.02 would hold rows out and run an eval loop inside the timed phase).

Measured per side: the training loop's seconds (the HF Trainer's own `train_runtime`, read from the run's
output; accelerate/axolotl start-up, model load, dataset preparation and the final save are excluded and
reported apart as `outside_train_loop_seconds`, the rest of the launch's wall time), target-carrying
rows/s (rows no longer than the side's sequence_len, so their target is trained on) and non-pad tokens/s
(prompt + target + EOS under the side's prompt format, re-tokenised here; packing's and padding's filler
not counted), and the ratio ours ÷ FinLoRA. The default --rows (677 for the shipped file: 100 × 512 × 0.95
÷ 71.8 mean chatml tokens) is what the demo's 100 packed steps hold, by lora/plan's packing efficiency.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUR_ENTRY = "sentiment_smollm2_cpu"
DATA = REPO / "data" / "train" / "fpb_train.jsonl"
DEMO_STEPS = 100  # the demo's max_steps when this was measured (now 250): the default --rows, 677, is what 100 hold
# FinLoRA's sentiment entries (data/finlora/finetune_configs.json, e.g. sentiment_llama_3_1_8b_8bits_r8_rslora)
FINLORA_KEYS = {"lora_r": 8, "learning_rate": 0.0001, "batch_size": 8, "gradient_accumulation_steps": 2}
_RUNTIME = re.compile(r"""['"]train_runtime['"]\s*:\s*['"]?([0-9]+(?:\.[0-9]+)?)""")


# ---------------------------------------------------------------- row accounting (pure)


def unpacked_steps(rows: int, micro_batch: int, accumulation: int) -> int:
    """Optimizer steps of one epoch without packing: each step sees micro_batch × accumulation rows (the last
    step takes what is left)."""
    return math.ceil(rows / (micro_batch * accumulation)) if rows else 0


def packed_steps(lengths: list[int], sequence_len: int, efficiency: float, micro_batch: int = 1,
                 accumulation: int = 1) -> int:
    """Optimizer steps of one epoch with sample packing: bins of sequence_len filled to `efficiency`."""
    tokens = sum(min(n, sequence_len) for n in lengths)
    bins = math.ceil(tokens / (sequence_len * efficiency)) if tokens else 0
    return math.ceil(bins / (micro_batch * accumulation)) if bins else 0


def rows_in_packed_steps(steps: int, lengths: list[int], sequence_len: int, efficiency: float) -> int:
    """Rows that `steps` packed steps (micro batch 1, no accumulation) hold, at the rows' mean length."""
    if not lengths:
        return 0
    mean = sum(min(n, sequence_len) for n in lengths) / len(lengths)
    return int(steps * sequence_len * efficiency // mean)


def useful(lengths: list[int], sequence_len: int) -> tuple[int, int]:
    """(target-carrying rows, their non-pad tokens): rows longer than sequence_len are dropped by axolotl."""
    kept = [n for n in lengths if n <= sequence_len]
    return len(kept), sum(kept)


def train_runtime(log: str) -> float | None:
    """The HF Trainer's `train_runtime` (seconds of the training loop) from a run's output, the last one printed."""
    found = _RUNTIME.findall(log)
    return float(found[-1]) if found else None


# ---------------------------------------------------------------- the run


def entries(data: Path, base: str) -> dict:
    """The temporary registry: our entry as shipped (max_steps dropped, one epoch) and FinLoRA's keys."""
    from lora.core.files import read_json

    ours = dict(read_json(REPO / "finetune_configs.json", "finetune_configs.json")[OUR_ENTRY])
    ours.pop("max_steps", None)
    ours.update(base_model=base, dataset_path=str(data), num_epochs=1, val_set_size=0.0)
    theirs = {"base_model": base, "dataset_path": str(data), "quant_bits": 16, "num_epochs": 1, "val_set_size": 0.0,
              **FINLORA_KEYS}
    return {"bench_ours": ours, "bench_finlora": theirs}


def row_lengths(data: Path, template: str, tokenizer) -> list[int]:
    """Tokens of prompt + target + EOS per row under a prompt template."""
    from lora.core.jsonl import read_jsonl
    from lora.core.prompts import apply

    return [len(tokenizer(apply(template, row["context"]) + row["target"])["input_ids"]) + 1
            for _, row in read_jsonl(data, ("context", "target"), "dataset")]


def launch(name: str, registry: Path, work: Path, flags: list[str]) -> tuple[float, str, int]:
    argv = [sys.executable, str(REPO / "finetune.py"), name, "--config-json", str(registry),
            "--recipes-dir", str(work / "recipes"), "--adapters-dir", str(work / "adapters"), *flags]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    return time.monotonic() - t0, proc.stdout + proc.stderr, proc.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, help="rows both sides train on (default: what 100 packed steps hold, 677)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (recipes, adapters, logs)")
    args = p.parse_args(argv)
    if args.rows is not None and args.rows < 1:
        print("error: --rows must be >= 1", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    from lora.core.errors import UserError

    try:
        return run(args, argv)
    except UserError as exc:  # the shipped entry no longer parses, the data file is malformed: one line
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def run(args, argv: list[str] | None) -> int:
    from transformers import AutoTokenizer

    from lora.core.base_model import ensure_base_model
    from lora.core.files import write_atomic, write_json_atomic
    from lora.core.prompts import PROMPT_FORMATS
    from lora.estimate.constants import PACKING_EFFICIENCY
    from lora.recipe.registry import parse_entry

    base = str(ensure_base_model(quiet=True))
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    work = Path(tempfile.mkdtemp(prefix="train_bench_"))
    all_rows = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    reg = entries(work / "data.jsonl", base)
    parsed = {name: parse_entry(name, e) for name, e in reg.items()}
    ours_e, theirs_e = parsed["bench_ours"].resolved, parsed["bench_finlora"].resolved
    if args.rows is None:
        full = row_lengths(DATA, PROMPT_FORMATS[ours_e.prompt_format], tokenizer)
        args.rows = rows_in_packed_steps(DEMO_STEPS, full, ours_e.sequence_len, PACKING_EFFICIENCY)
    rows = min(args.rows, len(all_rows))
    write_atomic(work / "data.jsonl", "".join(all_rows[:rows]))
    registry = work / "configs.json"
    write_json_atomic(registry, reg)

    sides = {}
    for name, flags, res in (("bench_ours", ["--precision", "auto"], ours_e),
                             ("bench_finlora", ["--precision", "fp32", "--profile", "cpu"], theirs_e)):
        lengths = row_lengths(work / "data.jsonl", PROMPT_FORMATS[res.prompt_format], tokenizer)
        n_rows, n_tokens = useful(lengths, res.sequence_len)
        print(f"training {name} on {rows} rows …", file=sys.stderr)
        wall, log, code = launch(name, registry, work, flags)
        write_atomic(work / f"{name}.log", log)
        if code != 0:
            print(f"error: {name} failed (exit {code}); last lines:\n{log[-3000:]}", file=sys.stderr)
            return 1
        seconds = train_runtime(log)
        run = json.loads((work / "adapters" / name / "run.json").read_text())
        entry = parsed[name]
        micro, accum = entry.batch_size, entry.gradient_accumulation_steps
        sides[name] = {
            "precision": (run.get("precision") or {}).get("used"), "sample_packing": res.sample_packing,
            "sequence_len": res.sequence_len, "prompt_format": res.prompt_format,
            "micro_batch": micro, "gradient_accumulation": accum, "global_step": run.get("global_step"),
            "expected_steps": packed_steps(lengths, res.sequence_len, PACKING_EFFICIENCY, micro, accum)
            if res.sample_packing else unpacked_steps(rows, micro, accum),
            "train_seconds": seconds, "launch_wall_seconds": round(wall, 1),
            "outside_train_loop_seconds": round(wall - seconds, 1) if seconds is not None else None,
            "useful_rows": n_rows, "non_pad_tokens": n_tokens,
            "rows_per_s": round(n_rows / seconds, 3) if seconds else None,
            "tokens_per_s": round(n_tokens / seconds, 1) if seconds else None,
        }
    ours, theirs = sides["bench_ours"], sides["bench_finlora"]
    summary = {
        "command": ["python", "benchmarks/train_throughput.py", *(argv if argv is not None else sys.argv[1:])],
        "rows": rows, "data": str(DATA.relative_to(REPO)), "sides": {"ours": ours, "finlora": theirs},
        "rows_per_s_ratio": round(ours["rows_per_s"] / theirs["rows_per_s"], 2)
        if ours["rows_per_s"] and theirs["rows_per_s"] else None,
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2)
        if ours["tokens_per_s"] and theirs["tokens_per_s"] else None,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    from benchmarks.report import finish

    return finish(summary, args.json, work, args.keep)


if __name__ == "__main__":
    sys.exit(main())
