"""Where eval's time goes with an adapter: the base alone, the adapter through peft's unmerged layers, and the
adapter merged into the base (`python -m eval --merge-lora`), in fp32 and bf16, on the same rows.

    .venv/bin/python benchmarks/lora_merge.py --adapter lora_adapters/sentiment_smollm2_cpu --json merge.json
    .venv/bin/python benchmarks/lora_merge.py --limit 16             # a throwaway all-linear r8 adapter, a smoke run

Per dtype (fp32, and bf16 where this CPU has bf16 matmuls, lora/core/precision.py): the bundled SmolLM2-135M-Instruct
is loaded once, the adapter attached once, and eval.generation.generate (batch 8, greedy, FinLoRA's raw prompt and
answer budget: `--scoring finlora`'s rules) runs the first --limit rows of each task three ways: the base with the
adapter disabled, the adapter unmerged, the adapter merged (eval.merged_lora.merged_into_base). Shared-prefix reuse is
off in all three, so only the adapter's path differs; one untimed batch first warms each load. Reported: seconds per way and task, merged ÷ unmerged
speed, and how many merged outputs equal the unmerged ones token for token. docs/eval-benchmark.md holds the
measured table; quote it with the matmul rates this script measures in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WAYS = ("base", "unmerged", "merged")


def run(args) -> dict:
    import torch

    from benchmarks.flops import matmul_gflops
    from eval.engine import AdapterHost, load_base
    from eval.fixtures import make_tiny_adapter
    from eval.generation import generate
    from eval.merged_lora import merged_into_base
    from eval.tasks import for_scoring, load_registry, load_task_data, select_tasks
    from lora.core.base_model import ensure_base_model
    from lora.core.precision import cpu_facts

    base = str(ensure_base_model(quiet=True))
    work = Path(tempfile.mkdtemp(prefix="lora_merge_"))
    adapter = args.adapter or make_tiny_adapter(work / "throwaway", base, seed=1, r=8, scale=0.002,
                                                target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"))
    tasks = [for_scoring(t, "finlora", None) for t in select_tasks(load_registry(), args.tasks.split(","))]
    datas = {t.name: load_task_data(t).head(args.limit) for t in tasks}
    dtypes = {"fp32": torch.float32}
    if cpu_facts().bf16_matmul:
        dtypes["bf16"] = torch.bfloat16
    out: dict = {"adapter": str(adapter), "limit": args.limit, "tasks": list(datas), "batch_size": 8,
                 "torch_threads": torch.get_num_threads(),
                 "matmul_peak_gflop_per_s": {k: round(matmul_gflops(k), 1) for k in dtypes}, "runs": {}}
    for dname, dtype in dtypes.items():
        loaded = load_base(base, dtype=dtype)
        host = AdapterHost(loaded)
        host.attach("a", str(adapter))
        model = host.peft_model
        # untimed: the first generate() of a tokenizer builds its token tables (seconds) and warms the kernels
        first = next(iter(datas.values()))
        generate(model, loaded.tokenizer, [r["context"] for r in first.rows[:8]], 2, True, 8, prefix_cache=False)
        for task_name, data in datas.items():
            prompts = [r["context"] for r in data.rows]
            task = data.task
            seconds, outputs = {}, {}
            for way in WAYS:
                t0 = time.monotonic()
                with way_context(model, way, merged_into_base):
                    outputs[way], _ = generate(model, loaded.tokenizer, prompts, task.max_new_tokens,
                                               task.kind.stop_at_newline, 8, prefix_cache=False)
                seconds[way] = round(time.monotonic() - t0, 2)
            same = sum(a == b for a, b in zip(outputs["merged"], outputs["unmerged"], strict=True))
            out["runs"][f"{dname} {task_name}"] = {
                "seconds": seconds, "merged_speedup_over_unmerged": round(seconds["unmerged"] / seconds["merged"], 2),
                "merged_outputs_equal_unmerged": f"{same}/{len(prompts)}"}
            print(f"{dname} {task_name}: {seconds}", file=sys.stderr, flush=True)
        del host, model, loaded
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["_work"] = str(work)
    return out


def way_context(model, way: str, merged_into_base):
    if way == "base":
        return model.disable_adapter()
    return merged_into_base(model, "a") if way == "merged" else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", type=Path, help="a trained adapter folder (default: a throwaway all-linear r8 one)")
    p.add_argument("--tasks", default="fpb,ner")
    p.add_argument("--limit", type=int, default=96, help="rows per task (default 96: 12 batches of 8)")
    p.add_argument("--json", help="also write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (the throwaway adapter)")
    args = p.parse_args(argv)
    if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
        print(f"error: --adapter {args.adapter}: no adapter_config.json there; give a trained adapter folder",
              file=sys.stderr)
        return 2
    if args.limit < 1:
        print(f"error: --limit {args.limit}: give a positive number of rows", file=sys.stderr)
        return 2
    summary = run(args)
    from benchmarks.report import finish

    return finish(summary, args.json, Path(summary.pop("_work")), args.keep)


if __name__ == "__main__":
    sys.exit(main())
