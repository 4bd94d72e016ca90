"""`python -m eval --processes N` against one process, the same total CPU threads (or GPUs), same files.

    .venv/bin/python benchmarks/eval_processes.py                         # 1×2 threads vs 2×1 thread (this CPU)
    .venv/bin/python benchmarks/eval_processes.py --limit 64 --repeats 3 --json out.json
    .venv/bin/python benchmarks/eval_processes.py --setups 1x1,2x1,4x1 --limit 400   # a 4-GPU pod (1 thread each)

Each setup `PxT` runs `python -m eval ADAPTER --tasks … --limit … --processes P` in a fresh --out with
OMP_NUM_THREADS=T (P processes × T threads); setups are interleaved round by round (A B A B …) so a
change in machine load hits them alike. The adapter is a throwaway one (eval.fixtures, seed 1) on the
bundled 135M base; the base row is evaluated too. Reported per setup (median over repeats): wall seconds
(interpreter start, model loads, generation, scoring: what a user waits), generation seconds (results.json:
the sum of every pair's `timing.seconds`), rows per wall second, and the ratio to the first setup; and
whether every setup's predictions are byte-identical to the first's (they must be).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_setups(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        p, _, t = part.strip().partition("x")
        out.append((int(p), int(t)))
    return out


def run_once(adapter: Path, out: Path, processes: int, threads: int, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "eval", str(adapter), "--tasks", args.tasks, "--limit", str(args.limit),
            "--batch-size", str(args.batch_size), "--out", str(out), "--no-progress", "--processes", str(processes)]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    results = json.loads((out / "results.json").read_text())
    pairs = [res for row in results["rows"] for res in row["results"].values()]
    rows = sum(res["metrics"]["n"] for res in pairs)
    predictions = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "predictions").rglob("*.jsonl"))}
    return {"wall_s": wall, "generate_s": sum(res["timing"]["seconds"] for res in pairs), "rows": rows,
            "ranks": results["timings"].get("ranks"), "predictions": predictions}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", default="1x2,2x1", help="comma-separated PROCESSESxTHREADS (default 1x2,2x1)")
    p.add_argument("--tasks", default="fpb,tfns")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", help="also write the measurements here")
    args = p.parse_args(argv)
    setups = parse_setups(args.setups)

    from eval.fixtures import make_tiny_adapter
    from lora.core.base_model import ensure_base_model

    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_tiny_adapter(Path(tmp) / "adapters" / "tiny_a", ensure_base_model(quiet=True), seed=1)
        runs: dict[tuple[int, int], list[dict]] = {s: [] for s in setups}
        for r in range(args.repeats):
            for s in setups:
                runs[s].append(run_once(adapter.parent, Path(tmp) / f"out_{s[0]}x{s[1]}_{r}", *s, args))
                print(f"round {r + 1}: {s[0]}x{s[1]} wall {runs[s][-1]['wall_s']:.1f} s", file=sys.stderr)

    first = runs[setups[0]][0]
    table = []
    for s in setups:
        wall = statistics.median(x["wall_s"] for x in runs[s])
        gen = statistics.median(x["generate_s"] for x in runs[s])
        table.append({"setup": f"{s[0]} process(es) × {s[1]} thread(s)", "processes": s[0], "threads": s[1],
                      "wall_s": round(wall, 2), "generate_s": round(gen, 2), "rows": first["rows"],
                      "rows_per_wall_s": round(first["rows"] / wall, 3),
                      "identical_predictions": all(x["predictions"] == first["predictions"] for x in runs[s]),
                      "ranks": runs[s][-1]["ranks"]})
    base_wall, base_gen = table[0]["wall_s"], table[0]["generate_s"]
    print("| setup | wall s | generation s | rows/s (wall) | speed-up (wall) | speed-up (generation) | "
          "predictions identical |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        t["speedup_wall"] = round(base_wall / t["wall_s"], 2)
        t["speedup_generate"] = round(base_gen / t["generate_s"], 2) if t["generate_s"] else None
        print(f"| {t['setup']} | {t['wall_s']} | {t['generate_s']} | {t['rows_per_wall_s']} | {t['speedup_wall']}× "
              f"| {t['speedup_generate']}× | {'yes' if t['identical_predictions'] else 'NO'} |")
    print(f"\n{first['rows']} rows per run ({args.tasks}, --limit {args.limit}, base + 1 adapter, batch "
          f"{args.batch_size}), median of {args.repeats}; command: python benchmarks/eval_processes.py "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "setups": table}, indent=2) + "\n")
    return 0 if all(t["identical_predictions"] for t in table) else 1


if __name__ == "__main__":
    sys.exit(main())
