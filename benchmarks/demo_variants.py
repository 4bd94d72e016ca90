"""The CPU demo's training variants (issue 14 item 4), trained and scored on the same seeded test samples.

    .venv/bin/python benchmarks/demo_variants.py --dry-run            # the plan: files, commands
    .venv/bin/python benchmarks/demo_variants.py                      # train + evaluate every variant (~15 min each)
    .venv/bin/python benchmarks/demo_variants.py --score-only         # re-print the table from earlier runs
    .venv/bin/python benchmarks/demo_variants.py --variants demo_steps_250_lr2e3,demo_steps_250_r16   # some only

Variants of `sentiment_smollm2_cpu` (finetune_configs.json), each with its steps and learning rate spelled out:
- shipped: the adapter `make demo` trains (scored here too when present), FPB's training split as is: 100 steps
  at lr 1e-3 until 2026-12-03, since then 250 steps at lr 2e-3 (the `demo_steps_250_lr2e3` variant);
- balanced_varied_100: FPB's split class-balanced (each label resampled, seeded, to the middle class's size) and
  the instruction's "news" varied among kinds of financial text, 100 steps at lr 1e-3;
- steps_250: the shipped data, 250 steps at lr 1e-3;
- steps_250_lr2e3, steps_250_r16: 250 steps at lr 2e-3, or at lr 1e-3 with rank 16 (alpha 32).
Scored on seeded 600-row samples of the FPB and TFNS test sets (TFNS sorts its rows by label, so its first N are
not a sample); TFNS both with FinLoRA's labels and the source's (docs/finlora.md: FinLoRA swaps positive and
neutral). Everything goes under --out (registry, data, samples, recipes, adapters, eval output).
Wilson 95% intervals. docs/demo.md holds the measured table.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDINGS = ("news", "tweet", "headline", "sentence", "financial text", "social media post")
SEED = 14
SAMPLE = 600
# name -> (the training file prepare() writes under --out, or None: the shipped one; the entry keys it sets).
# Steps and learning rate are spelled out, so a variant trains the same whatever the shipped entry says now.
VARIANTS = {
    "demo_balanced_varied_100": ("fpb_balanced_varied.jsonl", {"max_steps": 100, "learning_rate": 0.001}),
    "demo_steps_250": (None, {"max_steps": 250, "learning_rate": 0.001}),
    "demo_steps_250_lr2e3": (None, {"max_steps": 250, "learning_rate": 0.002}),
    "demo_steps_250_r16": (None, {"max_steps": 250, "learning_rate": 0.001, "lora_r": 16, "lora_alpha": 32}),
}


def balanced_varied(rows: list[dict], seed: int = SEED) -> list[dict]:
    """Every label resampled to the middle class's size (smaller ones repeat, the larger is cut), then each
    instruction's "news" replaced by a seeded choice of WORDINGS."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["target"], []).append(row)
    size = sorted(len(v) for v in by_label.values())[len(by_label) // 2]
    rng = random.Random(seed)
    out: list[dict] = []
    for label in sorted(by_label):
        pool = by_label[label][:]
        rng.shuffle(pool)
        out += (pool * (size // len(pool) + 1))[:size]
    rng.shuffle(out)
    words = random.Random(seed + 1)
    question = "What is the sentiment of this news?"
    return [dict(r, context=r["context"].replace(question, f"What is the sentiment of this {words.choice(WORDINGS)}?"))
            for r in out]


def wilson(k: int, n: int, z: float = 1.96) -> str:
    p = k / n
    d = 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return f"{100 * p:.1f}% [{100 * max(0.0, c - h):.1f}, {100 * min(1.0, c + h):.1f}]"


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) + "\n") for r in rows))


def prepare(out: Path) -> dict[str, dict]:
    """Writes the variant data, the registry (absolute paths) and the test samples; returns the variants."""
    out.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((REPO / "finetune_configs.json").read_text())["sentiment_smollm2_cpu"]
    base_model = str((REPO / shipped["base_model"]).resolve())
    fpb_train = REPO / shipped["dataset_path"]
    rows = [json.loads(line) for line in fpb_train.read_text().splitlines()]
    write_jsonl(out / "fpb_balanced_varied.jsonl", balanced_varied(rows))
    variants = {name: {**keys, **({"dataset_path": str(out / data)} if data else {})}
                for name, (data, keys) in VARIANTS.items()}
    registry = {name: {**shipped, "base_model": base_model, "dataset_path": str(fpb_train.resolve()),
                       "description": f"issue 14 demo variant {name} (benchmarks/demo_variants.py)", **change}
                for name, change in variants.items()}
    (out / "variants.json").write_text(json.dumps(registry, indent=1) + "\n")
    tasks = json.loads((REPO / "eval" / "tasks.json").read_text())
    reg = {}
    for task in ("fpb", "tfns"):
        lines = (REPO / "eval" / tasks[task]["data"]).read_text().splitlines(keepends=True)
        keep = sorted(random.Random(SEED).sample(range(len(lines)), SAMPLE))
        write_jsonl(out / f"{task}{SAMPLE}.jsonl", [lines[i] for i in keep])
        reg[f"{task}{SAMPLE}"] = {k: v for k, v in tasks[task].items() if k != "train"} | {"data": f"{task}{SAMPLE}.jsonl"}
    (out / "tasks.json").write_text(json.dumps(reg, indent=1) + "\n")
    return variants


def commands(out: Path, variants: list[str]) -> list[list[str]]:
    py, tasks = sys.executable, f"fpb{SAMPLE},tfns{SAMPLE}"
    # recipes and adapters under --out: recipes/ holds only the registry's own (tests/recipe/test_render.py checks it)
    cmds = [[py, "finetune.py", "--config-json", str(out / "variants.json"), name, "--recipes-dir", str(out / "recipes"),
             "--adapters-dir", str(out / "adapters")] for name in variants]
    shipped = REPO / "lora_adapters" / "sentiment_smollm2_cpu"  # scored beside the variants once make demo trained it
    adapters = [str(out / "adapters" / name) for name in variants]
    if (shipped / "adapter_config.json").is_file():
        adapters.insert(0, str(shipped))
    cmds.append([py, "-m", "eval", *adapters, "--tasks-json", str(out / "tasks.json"), "--tasks", tasks,
                 "--out", str(out / "eval"), "--no-progress"])
    return cmds


def table(out: Path) -> str:
    from eval.tasks import load_registry

    # the shipped task's map (FinLoRA's TFNS labels -> the source's), applied to the same outputs: no second run
    source_labels = dict(load_registry()["tfns_source_labels"].relabel)
    lines = ["| row | FPB (600) | TFNS (600), FinLoRA's labels | TFNS (600), source labels |", "|---|---|---|---|"]
    for folder in sorted((out / "eval" / "predictions").iterdir()):
        cells = []
        for task, relabel in ((f"fpb{SAMPLE}", {}), (f"tfns{SAMPLE}", {}), (f"tfns{SAMPLE}", source_labels)):
            path = folder / f"{task}.jsonl"
            if not path.is_file():
                cells.append("–")
                continue
            preds = [json.loads(x) for x in path.read_text().splitlines()]
            right = sum(p["parsed"] == relabel.get(p["target"], p["target"]) for p in preds)
            cells.append(wilson(right, len(preds)))
        lines.append(f"| {folder.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "eval_results" / "demo_variants")
    p.add_argument("--dry-run", action="store_true", help="write the registry and samples, print the commands")
    p.add_argument("--score-only", action="store_true", help="print the table of an earlier run")
    p.add_argument("--variants", help="comma-separated names to train (default: all); the rest are scored if present")
    args = p.parse_args(argv)
    if args.score_only:
        if not (args.out / "eval" / "predictions").is_dir():
            print(f"error: {args.out}/eval holds no earlier run; run without --score-only first", file=sys.stderr)
            return 2
        print(table(args.out))
        return 0
    chosen = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:  # before anything is written
        print(f"error: --variants {unknown[0]}: no such variant; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    prepare(args.out)
    cmds = commands(args.out, chosen)
    for cmd in cmds:
        print("$ " + " ".join(cmd), flush=True)
        if not args.dry_run and subprocess.run(cmd, cwd=REPO).returncode != 0:
            print(f"error: {' '.join(cmd[1:3])} failed (its output is above)", file=sys.stderr)
            return 1
    if not args.dry_run:
        print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
