"""The plan's CPU memory estimate vs the peak RSS measured during a short real run of the same entry.

    .venv/bin/python benchmarks/cpu_peak_memory.py                          # every cpu entry, 6 steps each
    .venv/bin/python benchmarks/cpu_peak_memory.py sentiment_smollm2_cpu --cpu-processes 2 --json out.json

For each entry: `finetune.py <name> --plan --json` (what a user sees before launching), then a real
`finetune.py <name>` run with max_steps = --steps into a temporary folder (the repo's lora_adapters/ and
recipes/ are not touched), polling /proc every 0.2 s for the training processes' VmHWM (the kernel's
peak resident set, file-backed pages of the mmapped weights included). Reported per entry: the plan's
peak per process, the measured peak of the largest training rank, their ratio, and the largest sum of
RSS over the whole process tree (launcher, ranks and their helpers: what the machine must hold).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GIB = 2 ** 30
RANK_MODULES = ("axolotl.cli.train", "lora.train.axolotl_cpu_ranks")


def is_training_process(argv: list[str]) -> bool:
    """`python [-u …] -m axolotl.cli.train …`: a rank (or a helper it forked), not a launcher such as
    `python …/torchrun … -m lora.train.axolotl_cpu_ranks` that names the module after its own script."""
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":  # interpreter options only
        i += 1
    return i + 1 < len(argv) and argv[i] == "-m" and argv[i + 1] in RANK_MODULES


def short_registry(reg, name: str, steps: int, folder: Path) -> Path:
    """The entry as a one-entry registry with absolute paths and max_steps = steps."""
    entry = reg.get(name)
    data = entry.model_dump(mode="json", exclude_unset=True)
    data["dataset_path"] = str(reg.resolve_path(entry.dataset_path))
    data["base_model"] = reg.resolve_base_model(entry)
    data["max_steps"] = steps
    path = folder / "configs.json"
    path.write_text(json.dumps({name: data}, indent=1))
    return path


def watch(proc: subprocess.Popen, poll: float = 0.2) -> dict:
    """Peak VmHWM per training rank and the peak summed RSS of the tree, until proc exits."""
    import psutil

    root = psutil.Process(proc.pid)
    rank_hwm: dict[int, int] = {}
    tree_peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0
        for p in procs:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
                argv = p.cmdline()
                parent = p.parent()
                parent_argv = parent.cmdline() if parent else []
            except (OSError, psutil.Error):
                continue
            fields = {k: v for k, _, v in (line.partition(":") for line in status.splitlines())}
            rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
            total += rss_kb
            # a rank is a training process whose parent is not itself a training process (forked
            # helpers such as tokenisation workers share the command line)
            if is_training_process(argv) and not is_training_process(parent_argv):
                rank_hwm[p.pid] = max(rank_hwm.get(p.pid, 0), int(fields.get("VmHWM", "0 kB").split()[0]))
        tree_peak = max(tree_peak, total)
        time.sleep(poll)
    return {"rank_peak_gib": sorted(round(v * 1024 / GIB, 3) for v in rank_hwm.values()),
            "tree_peak_rss_gib": round(tree_peak * 1024 / GIB, 3)}


def measure(reg, name: str, steps: int, processes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="cpu_mem_") as tmp:
        folder = Path(tmp)
        short = short_registry(reg, name, steps, folder)
        common = ["--config-json", str(short), "--recipes-dir", str(folder / "recipes"),
                  "--adapters-dir", str(folder / "adapters"), "--cpu-processes", str(processes)]
        plan = json.loads(subprocess.run([sys.executable, str(REPO / "finetune.py"), name, "--plan", "--json", *common],
                                         cwd=REPO, capture_output=True, text=True, check=True).stdout)
        t0 = time.monotonic()
        log = folder / "train.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, str(REPO / "finetune.py"), name, *common], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)
            seen = watch(proc)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: training exited {proc.returncode}; last lines:\n"
                             + "\n".join(log.read_text().splitlines()[-20:]))
        run = json.loads((folder / "adapters" / name / "run.json").read_text())
    measured = max(seen["rank_peak_gib"])
    return {
        "entry": name, "processes": processes, "steps": run.get("global_step"), "wall_s": round(time.monotonic() - t0, 1),
        "plan_peak_gib": plan["peak_gb_per_gpu"], "plan_parts_gib": plan["parts"],
        "measured_rank_peak_gib": measured, "ranks": seen["rank_peak_gib"],
        "plan_over_measured": round(plan["peak_gb_per_gpu"] / measured, 3),
        "tree_peak_rss_gib": seen["tree_peak_rss_gib"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("entries", nargs="*", help="cpu entries (default: all of them)")
    p.add_argument("--config-json", type=Path, default=REPO / "finetune_configs.json")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cpu-processes", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    from lora.recipe.registry import load_registry

    reg = load_registry(args.config_json)
    names = args.entries or [name for name, e in reg.entries.items() if e.profile == "cpu"]
    rows = []
    for name in names:
        row = measure(reg, name, args.steps, args.cpu_processes)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| entry | processes | plan GiB/process | measured rank peak GiB | plan / measured | tree peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['entry']} | {r['processes']} | {r['plan_peak_gib']:.2f} | {r['measured_rank_peak_gib']:.2f} | "
              f"{r['plan_over_measured']:.2f} | {r['tree_peak_rss_gib']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
