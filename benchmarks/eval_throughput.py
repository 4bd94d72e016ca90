"""Throughput of `python -m eval` against a FinLoRA-style evaluation loop, same adapters, same prompts.

    .venv/bin/python benchmarks/eval_throughput.py --limit 200            # the issue's setting (slow on CPU)
    .venv/bin/python benchmarks/eval_throughput.py --limit 24 --json out.json

Both sides evaluate N throwaway adapters (eval.fixtures, seeded) × the tasks on the bundled 135M base,
with the chatml prompt the adapters' run.json names, greedy:
- this eval: base loaded once, adapters attached with peft, batches sorted by prompt length, stop at EOS
  and at the newline after the answer, per-task max_new_tokens (`eval.cli.main`, --no-base);
- FinLoRA-style: base + adapter reloaded for every adapter×task, rows in file order, batch 8, the
  tokenizer's own left padding, a fixed max_new_tokens and no EOS stop (min_new_tokens = max_new_tokens).
Both outputs are parsed by the same rule (eval.kinds / eval.metrics), and the script reports samples/s, the ratio,
accuracy of both and how many parsed answers agree. Wall time includes model loads (that is the point).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def finlora_style(base: str, adapters: list[Path], datas: dict, template: str, batch_size: int,
                  max_new_tokens: int) -> tuple[dict, dict, float]:
    """outputs[(adapter, task)] = list of raw outputs; seconds[(adapter, task)] incl. loads; the wall seconds."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from lora.prompts import apply

    outputs, seconds = {}, {}
    t0 = time.monotonic()
    for adapter in adapters:
        for task, data in datas.items():
            t_pair = time.monotonic()
            # FinLoRA's harness loads the model inside the per-task evaluation.
            tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
            model = PeftModel.from_pretrained(model, str(adapter)).eval()
            config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                      pad_token_id=tokenizer.pad_token_id)
            prompts = [apply(template, r["context"]) for r in data.rows]
            outs = []
            for i in range(0, len(prompts), batch_size):  # file order
                batch = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
                with torch.inference_mode():
                    gen = model.generate(**batch, generation_config=config)
                outs += tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            outputs[(adapter.name, task)] = outs  # keyed by folder name, as the eval rows are below
            seconds[(adapter.name, task)] = time.monotonic() - t_pair
            del model
    return outputs, seconds, time.monotonic() - t0


def copy_trained(source: Path, target: Path) -> Path:
    """A trained adapter as a benchmark adapter: weights, config and the run.json naming its prompt."""
    target.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(source / name, target / name)
    run = source / "run.json" if (source / "run.json").is_file() else source.parent / "run.json"
    shutil.copy2(run, target / "run.json")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--tasks", default="fpb,ner")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of both sides")
    p.add_argument("--finlora-max-new-tokens", type=int, default=32)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                   help="this eval's --precision (default fp32, as the runs below were measured; auto: bf16 where "
                        "the CPU has it); the FinLoRA-style side always runs fp32")
    p.add_argument("--prefix-cache", choices=("on", "off"), default="on", help="this eval's --prefix-cache")
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--keep", action="store_true", help="keep the temporary adapters and eval output")
    p.add_argument("--trained", nargs="+", type=Path,
                   help="use these trained adapter folders (cycled to --adapters copies) instead of throwaway ones; "
                        "a checkpoint-N folder borrows its parent's run.json")
    args = p.parse_args(argv)

    import torch

    from eval.cli import main as eval_main
    from eval.discovery import discover
    from eval.fixtures import make_tiny_adapter
    from eval.kinds import score_task
    from eval.tasks import load_registry, load_task_data, select_tasks
    from lora.base_model import ensure_base_model
    from lora.prompts import PROMPT_FORMATS

    base = str(ensure_base_model(quiet=True))
    tasks = select_tasks(load_registry(), args.tasks.split(","))
    datas = {}
    for t in tasks:
        d = load_task_data(t)
        datas[t.name] = d.head(args.limit)
    work = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    if args.trained:
        adapters = [copy_trained(args.trained[i % len(args.trained)], work / "adapters" / f"bench_{i}")
                    for i in range(args.adapters)]
    else:
        adapters = [make_tiny_adapter(work / "adapters" / f"bench_{i}", base, seed=i + 1, scale=0.03)
                    for i in range(args.adapters)]
    n_total = args.adapters * sum(len(d.rows) for d in datas.values())
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    print(f"{args.adapters} adapters × {list(datas)} × {args.limit} rows = {n_total} generations per side; "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)

    t0 = time.monotonic()
    code = eval_main([str(work / "adapters"), "--tasks", args.tasks, "--limit", str(args.limit), "--no-base",
                      "--batch-size", str(args.batch_size), "--out", str(work / "eval_out"), "--no-progress",
                      "--precision", args.precision, "--prefix-cache", args.prefix_cache])
    ours_s = time.monotonic() - t0
    if code != 0:
        print(f"eval exited {code}", file=sys.stderr)
        return 1
    results = json.loads((work / "eval_out" / "results.json").read_text())
    folder_of = {a.name: a.path.name for a in discover([work / "adapters"])}  # row name -> adapter folder
    ours_out, ours_seconds = {}, {}
    for r in results["rows"]:
        for task, res in r["results"].items():
            ours_seconds[(folder_of[r["name"]], task)] = res["timing"]["seconds"]
            ours_out[(folder_of[r["name"]], task)] = [json.loads(x)["output"] for x in
                                          (work / "eval_out" / res["predictions"]).read_text().splitlines()]

    theirs_out, theirs_seconds, theirs_s = finlora_style(base, adapters, datas, PROMPT_FORMATS["chatml"], args.batch_size,
                                         args.finlora_max_new_tokens)

    agree = total = 0
    disagreements: list[dict] = []
    acc = {"eval": [], "finlora_style": []}
    for key, outs in ours_out.items():
        d = datas[key[1]]
        targets = [r["target"] for r in d.rows]
        labels = list(d.labels) if d.labels else None
        m1, rows1 = score_task(d.task.kind.name, outs, targets, labels, with_intervals=False)
        m2, rows2 = score_task(d.task.kind.name, theirs_out[key], targets, labels, with_intervals=False)
        agree += sum(a["parsed"] == b["parsed"] for a, b in zip(rows1, rows2, strict=True))
        disagreements += [{"pair": f"{key[0]}×{key[1]}", "eval": o1, "finlora_style": o2}
                          for a, b, o1, o2 in zip(rows1, rows2, outs, theirs_out[key], strict=True) if a["parsed"] != b["parsed"]]
        total += len(rows1)
        acc["eval"].append(m1["accuracy"])
        acc["finlora_style"].append(m2["accuracy"])
    summary = {
        "limit": args.limit, "adapters": args.adapters, "tasks": list(datas), "generations_per_side": n_total,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "eval_precision": results["groups"][0].get("precision"), "eval_prefix_cache": args.prefix_cache,
        "finlora_max_new_tokens": args.finlora_max_new_tokens,
        "eval_seconds": round(ours_s, 1), "finlora_style_seconds": round(theirs_s, 1),
        "eval_samples_per_s": round(n_total / ours_s, 3), "finlora_style_samples_per_s": round(n_total / theirs_s, 3),
        "speedup": round(theirs_s / ours_s, 2),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "parsed_answers_agree": f"{agree}/{total}",
        "mean_accuracy_eval": round(sum(acc["eval"]) / len(acc["eval"]), 4),
        "mean_accuracy_finlora_style": round(sum(acc["finlora_style"]) / len(acc["finlora_style"]), 4),
        "disagreements": disagreements[:10],
        "seconds_per_task": {  # summed over adapters; this eval's excludes its single base load
            t: {"eval": round(sum(v for k, v in ours_seconds.items() if k[1] == t), 1),
                "finlora_style": round(sum(v for k, v in theirs_seconds.items() if k[1] == t), 1)} for t in datas},
        "accuracy_per_pair": {f"{k[0]}×{k[1]}": [a, b] for k, a, b in zip(ours_out, acc["eval"], acc["finlora_style"], strict=True)},
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
