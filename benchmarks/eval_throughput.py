"""Throughput of `python -m eval --scoring finlora` against FinLoRA's own evaluation harness, same adapters and rows.

    .venv/bin/python benchmarks/eval_throughput.py --trained DIR [DIR …] --json bench.json   # 4 × fpb,ner × 200
    .venv/bin/python benchmarks/eval_throughput.py --limit 8 --adapters 2                   # a smoke run, minutes

Both sides evaluate N adapters (trained ones with --trained, cycled to N copies; else throwaway ones from
eval.fixtures, seeded) × the tasks × the first --limit rows on the bundled SmolLM2-135M-Instruct, on this CPU.

FinLoRA side (`finlora_harness`): FinLoRA's test/test.py → test_dataset.test_fin_tasks → inference.py as it
would run here: per adapter × dataset it reloads tokenizer + base + PeftModel, rows in file order, its batch
(`--batch-size`, test.py's default 8; its run_all_adapters.sh uses 1), its answer budgets
(max_new_token_dict, 30 when absent), stop at the tokenizer's EOS, the raw `context` as the prompt, the whole
sequence decoded and the text after the last "Answer:" taken. What cannot run here is replaced: its
bitsandbytes 8/4-bit + bf16 + `.cuda()` load becomes an fp32 CPU load (there is no GPU, and bitsandbytes'
CPU int8 path is not what FinLoRA measured); its `max_length=512` truncates nothing (transformers ignores it with padding=True and no truncation, and
says so), as on its GPUs; its `temperature=0.00001` is greedy decoding (the base's
generation_config has do_sample off, so transformers ignores the temperature and decodes greedily there too);
trust_remote_code stays off (a local llama needs none); the rows come from the same JSONL files already read.

Our side: `python -m eval ADAPTERS --scoring finlora --tasks … --no-base --limit N` in this process (FinLoRA's
raw prompt, budgets and scorers), three times (OUR_SIDES): `--precision fp32` (shared-prefix reuse on, auto),
`--precision auto` (bf16 where the CPU has bf16 matmuls, prefix reuse off and adapters merged: `--prefix-cache`
and `--merge-lora` auto), and the same with `--prefix-cache on` (bf16 reuse: not identical to off, its flips
counted). Our batch is eval's default 8.

Every side's answers are parsed by the same FinLoRA scorer (eval.finlora_scoring.finlora_label_scores). The
script reports per side wall seconds (model loads included: that is the point), samples/s, the ratio to the
FinLoRA side, parsed-answer agreement ours-fp32 vs FinLoRA and bf16-vs-fp32 flips of ours, and utilisation:
useful FLOPs (benchmarks/flops.py: real prompt tokens + generated answer tokens, no padding, a reused prefix
counted per row) ÷ wall seconds ÷ the 2048² matmul peak measured in the same run for the side's dtype.
"""
from __future__ import annotations

import argparse
import gc
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

from eval.finlora_scoring import ANSWER_CUE  # noqa: E402  FinLoRA's delimiter: inference(..., delimiter="Answer:")


def finlora_answers(decoded: list[str], delimiter: str = ANSWER_CUE) -> list[str]:
    """FinLoRA inference.py, local branch: `["".join(o.split(delimiter)[-1]).strip() for o in res_sentences]`,
    where each sentence is the WHOLE decoded sequence (prompt + generation, special tokens skipped)."""
    return ["".join(o.split(delimiter)[-1]).strip() for o in decoded]


def new_token_count(generated: list[int], stops: set[int]) -> int:
    """Answer tokens of one generated row: up to (not including) the first stop/pad token."""
    return next((k for k, t in enumerate(generated) if t in stops), len(generated))


def finlora_load_local_model(base: str, adapter: str):
    """FinLoRA test/inference.py `load_local_model` (source hf), on this CPU in fp32 (module docstring)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "left"
    if len(tokenizer) != model.get_input_embeddings().weight.size(0):
        model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, adapter)
    model = model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def finlora_harness(base: str, adapters: list[Path], datas: dict, batch_size: int) -> dict:
    """FinLoRA's harness, one adapter × dataset at a time, as its run_all_adapters.sh drives test/test.py:
    - test.py `main`: torch.no_grad() around test_fin_tasks per dataset;
    - test_dataset.py `test_fin_tasks`: load_local_model per dataset, contexts in file order, batches of
      `batch_size` (`range(total_steps + 1)` with an empty last slice skipped), max_new_token_dict.get(name, 30),
      delimiter "Answer:", then `del model, tokenizer; gc.collect()`;
    - inference.py `inference` (local branch): tokenizer(inputs, return_tensors='pt', padding=True,
      max_length=512, return_token_type_ids=False), generate(max_new_tokens, eos_token_id=tokenizer.eos_token_id,
      temperature=0.00001 → greedy here), decode each whole sequence (skip_special_tokens), text after the last
      delimiter, strip.
    Returns {(adapter folder, task): {"answers", "seconds" (loads included), "tokens": [(prompt, new), …]}}."""
    import torch

    results = {}
    for adapter in adapters:
        for task, data in datas.items():
            t0 = time.monotonic()
            with torch.no_grad():
                model, tokenizer = finlora_load_local_model(base, str(adapter))
                context = [r["context"] for r in data.rows]
                budget = data.task.max_new_tokens  # for_scoring(…, 'finlora'): max_new_token_dict's
                stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
                answers, tokens = [], []
                for i in range(len(context) // batch_size + 1):
                    tmp_context = context[i * batch_size: min(len(context), (i + 1) * batch_size)]
                    if not tmp_context:
                        break
                    batch = tokenizer(tmp_context, return_tensors="pt", padding=True, max_length=512,
                                      return_token_type_ids=False)
                    res = model.generate(**batch, max_new_tokens=budget, eos_token_id=tokenizer.eos_token_id,
                                         do_sample=False)
                    answers += finlora_answers([tokenizer.decode(s, skip_special_tokens=True) for s in res])
                    width = batch["input_ids"].shape[1]
                    tokens += [(int(m.sum()), new_token_count(s[width:].tolist(), stops))
                               for m, s in zip(batch["attention_mask"], res, strict=True)]
                del model, tokenizer
                gc.collect()
            results[(adapter.name, task)] = {"answers": answers, "seconds": time.monotonic() - t0, "tokens": tokens}
    return results


# our sides: name -> the flags of `python -m eval` that make it (the defaults, then one opt-in)
OUR_SIDES = {
    "fp32": ["--precision", "fp32"],
    "auto": ["--precision", "auto"],
    "auto+prefix": ["--precision", "auto", "--prefix-cache", "on"],
}


def run_ours(adapters_dir: Path, out: Path, tasks: str, limit: int, flags: list[str]) -> tuple[dict, float, str]:
    """`python -m eval … --scoring finlora` in this process. Returns ({(adapter folder, task): {"answers",
    "seconds", "outputs"}}, wall seconds, the precision eval used)."""
    from eval.discovery import discover
    from lora.cli.shims import eval_main

    t0 = time.monotonic()
    code = eval_main([str(adapters_dir), "--scoring", "finlora", "--tasks", tasks, "--limit", str(limit), "--no-base",
                      "--out", str(out), "--no-progress", *flags])
    wall = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"python -m eval exited {code} (see its output above)")
    results = json.loads((out / "results.json").read_text())
    folder_of = {a.name: a.path.name for a in discover([adapters_dir])}  # row name -> adapter folder
    pairs = {}
    for row in results["rows"]:
        for task, res in row["results"].items():
            preds = [json.loads(x) for x in (out / res["predictions"]).read_text().splitlines()]
            pairs[(folder_of[row["name"]], task)] = {
                "answers": [p["answer"] for p in preds], "outputs": [p["output"] for p in preds],
                "seconds": res["timing"]["seconds"], "timing": res["timing"],
                "merged": res.get("lora_merge", {}).get("merged")}
    record = results["groups"][0].get("precision") or {}
    return pairs, wall, record["used"]


def scored(pair: dict, data) -> list[dict]:
    """FinLoRA's reading of a pair's answers ({parsed, correct} per row, eval.finlora_scoring), worked out once
    per pair and kept on it: agreement and accuracy both read it."""
    if "scored" not in pair:
        from eval.finlora_scoring import finlora_label_scores

        pair["scored"] = finlora_label_scores(pair["answers"], [r["target"] for r in data.rows])[1]
    return pair["scored"]


def agreement(a: dict, b: dict, datas: dict, names: tuple[str, str]) -> tuple[int, int, list[dict]]:
    """(agreeing parsed answers, rows, the first disagreements) of two sides' {(adapter, task): {"answers"}}."""
    agree = total = 0
    diffs: list[dict] = []
    for key, side in a.items():
        pa, pb = scored(side, datas[key[1]]), scored(b[key], datas[key[1]])
        for i, (x, y) in enumerate(zip(pa, pb, strict=True)):
            total += 1
            if x["parsed"] == y["parsed"]:
                agree += 1
            elif len(diffs) < 10:
                diffs.append({"pair": f"{key[0]}×{key[1]}", "row": i, names[0]: side["answers"][i],
                              names[1]: b[key]["answers"][i]})
    return agree, total, diffs


def accuracy(side: dict, datas: dict) -> float:
    rows = [r for key, pair in side.items() for r in scored(pair, datas[key[1]])]
    return sum(r["correct"] for r in rows) / len(rows) if rows else 0.0


def ours_tokens(pairs: dict, datas: dict, tokenizer) -> dict:
    """(prompt tokens, answer tokens) per row of our side: the raw context tokenised as eval does and the output
    re-tokenised (eval records per-pair sums only; the sums are checked against its own counts in the JSON)."""
    for key, pair in pairs.items():
        prompts = [len(tokenizer(r["context"])["input_ids"]) for r in datas[key[1]].rows]
        outs = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) if o else 0 for o in pair["outputs"]]
        pair["tokens"] = list(zip(prompts, outs, strict=True))
    return pairs


def copy_trained(source: Path, target: Path) -> Path:
    """A trained adapter as a benchmark adapter: weights, config and the run.json naming its prompt."""
    target.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(source / name, target / name)
    run = source / "run.json" if (source / "run.json").is_file() else source.parent / "run.json"
    shutil.copy2(run, target / "run.json")
    return target


def side_summary(name: str, pairs: dict, wall: float, n: int, arch, peak_gflops: float, dtype: str,
                 finlora_wall: float | None) -> dict:
    from benchmarks.flops import total_generation_flops

    flops = sum(total_generation_flops(arch, p["tokens"]) for p in pairs.values())
    achieved = flops / wall / 1e9
    out = {"side": name, "dtype": dtype, "wall_seconds": round(wall, 1), "samples_per_s": round(n / wall, 3),
           "useful_gflop": round(flops / 1e9, 1), "achieved_gflop_per_s": round(achieved, 2),
           "matmul_peak_gflop_per_s": round(peak_gflops, 1), "utilisation": round(achieved / peak_gflops, 4),
           "prompt_tokens": sum(p for pair in pairs.values() for p, _ in pair["tokens"]),
           "new_tokens": sum(g for pair in pairs.values() for _, g in pair["tokens"]),
           "seconds_per_pair": {f"{k[0]}×{k[1]}": round(v["seconds"], 1) for k, v in pairs.items()}}
    if finlora_wall is not None:
        out["speedup_vs_finlora"] = round(finlora_wall / wall, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=200, help="first N rows of each task (default 200)")
    p.add_argument("--adapters", type=int, default=4, help="adapters (default 4)")
    p.add_argument("--tasks", default="fpb,ner")
    p.add_argument("--batch-size", type=int, default=8,
                   help="FinLoRA's --batch_size (default 8, test.py's; run_all_adapters.sh uses 1); ours is eval's 8")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the temporary adapters and eval output")
    p.add_argument("--trained", nargs="+", type=Path,
                   help="use these trained adapter folders (cycled to --adapters copies) instead of throwaway ones; "
                        "a checkpoint-N folder borrows its parent's run.json")
    args = p.parse_args(argv)
    if args.limit < 1 or args.adapters < 1 or args.batch_size < 1:
        print("error: --limit, --adapters and --batch-size must be >= 1", file=sys.stderr)
        return 2
    from lora.core.errors import UserError

    try:
        return run(args, argv)
    except UserError as exc:  # an unknown task, a --trained folder without an adapter: one line, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def check_trained(folders: list[Path]) -> None:
    from lora.core.errors import UserError

    for folder in folders:
        if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
            raise UserError(f"--trained {folder}: not an adapter folder (needs adapter_config.json and "
                            "adapter_model.safetensors)")
        if not (folder / "run.json").is_file() and not (folder.parent / "run.json").is_file():
            raise UserError(f"--trained {folder}: no run.json in it or its parent (a finished finetune.py run)")


def run(args, argv: list[str] | None) -> int:
    import torch
    from transformers import AutoTokenizer

    from benchmarks.flops import MATMUL_SIZE, matmul_gflops
    from eval.fixtures import make_tiny_adapter
    from eval.tasks import for_scoring, load_registry, load_task_data, select_tasks
    from lora.core.base_model import ensure_base_model
    from lora.core.files import read_json
    from lora.estimate.facts import arch_from_config

    if args.trained:
        check_trained(args.trained)
    base = str(ensure_base_model(quiet=True))
    arch = arch_from_config(read_json(Path(base) / "config.json", "base config"), "base config.json")
    tasks = [for_scoring(t, "finlora", None) for t in select_tasks(load_registry(), args.tasks.split(","))]
    datas = {t.name: load_task_data(t).head(args.limit) for t in tasks}
    work = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    adapters_dir = work / "adapters"
    if args.trained:
        adapters = [copy_trained(args.trained[i % len(args.trained)], adapters_dir / f"bench_{i}")
                    for i in range(args.adapters)]
    else:
        adapters = [make_tiny_adapter(adapters_dir / f"bench_{i}", base, seed=i + 1, scale=0.03)
                    for i in range(args.adapters)]
    n = args.adapters * sum(len(d.rows) for d in datas.values())
    threads = torch.get_num_threads()
    print(f"load average before: {os.getloadavg()}; {args.adapters} adapters × {list(datas)} × {args.limit} rows = "
          f"{n} generations per side; torch threads {threads}", file=sys.stderr)
    peaks = {dt: matmul_gflops(dt) for dt in ("fp32", "bf16")}
    print(f"{MATMUL_SIZE}² matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), file=sys.stderr)

    t0 = time.monotonic()
    theirs = finlora_harness(base, adapters, datas, args.batch_size)
    theirs_wall = time.monotonic() - t0
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    ours = {}
    for name, flags in OUR_SIDES.items():
        pairs, wall, used = run_ours(adapters_dir, work / f"eval_{name}", args.tasks, args.limit, flags)
        ours[name] = (ours_tokens(pairs, datas, tokenizer), wall, used)
    peaks_after = {dt: matmul_gflops(dt) for dt in ("fp32", "bf16")}

    fp32_pairs, bf16_pairs = ours["fp32"][0], ours["auto"][0]
    agree, total, diffs = agreement(fp32_pairs, theirs, datas, ("eval_fp32", "finlora"))
    same, total_flips, flips = agreement(bf16_pairs, fp32_pairs, datas, ("eval_bf16", "eval_fp32"))
    same_prefix, _, prefix_flips = agreement(ours["auto+prefix"][0], bf16_pairs, datas, ("eval_bf16_prefix", "eval_bf16"))
    sides = [side_summary("finlora_harness", theirs, theirs_wall, n, arch, peaks["fp32"], "fp32", None)]
    for name, (pairs, wall, used) in ours.items():
        side = side_summary(f"eval {' '.join(OUR_SIDES[name])}", pairs, wall, n, arch, peaks[used], used, theirs_wall)
        side["eval_counted_new_tokens"] = sum(p["timing"]["new_tokens"] for p in pairs.values())
        side["eval_counted_prompt_tokens"] = sum(p["timing"]["prompt_tokens"] for p in pairs.values())
        side["shared_prefix_tokens_per_row"] = {f"{k[0]}×{k[1]}": p["timing"]["shared_prefix_tokens"]
                                                for k, p in pairs.items()}
        side["merged_pairs"] = f"{sum(bool(p['merged']) for p in pairs.values())}/{len(pairs)}"  # --merge-lora auto
        sides.append(side)
    summary = {
        "command": ["python", "benchmarks/eval_throughput.py", *(argv if argv is not None else sys.argv[1:])],
        "limit": args.limit, "adapters": args.adapters, "tasks": list(datas), "generations_per_side": n,
        "trained": [str(t) for t in args.trained] if args.trained else None,
        "torch_threads": threads, "finlora_batch_size": args.batch_size, "eval_batch_size": 8,
        "matmul_peak_gflop_per_s": {"before": {k: round(v, 1) for k, v in peaks.items()},
                                    "after": {k: round(v, 1) for k, v in peaks_after.items()}},
        "sides": sides,
        "parsed_agree_fp32_vs_finlora": f"{agree}/{total}", "agreement_rate": round(agree / total, 4),
        "bf16_vs_fp32_flips": f"{total_flips - same}/{total_flips}",
        "bf16_prefix_on_vs_off_flips": f"{total_flips - same_prefix}/{total_flips}",
        "accuracy": {"finlora_harness": round(accuracy(theirs, datas), 4),
                     "eval_fp32": round(accuracy(fp32_pairs, datas), 4),
                     "eval_bf16": round(accuracy(bf16_pairs, datas), 4),
                     "eval_bf16_prefix": round(accuracy(ours["auto+prefix"][0], datas), 4)},
        "disagreements_fp32_vs_finlora": diffs, "flips_bf16_vs_fp32": flips,
        "flips_bf16_prefix_on_vs_off": prefix_flips,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    from benchmarks.report import finish

    return finish(summary, args.json, work, args.keep)


if __name__ == "__main__":
    sys.exit(main())
