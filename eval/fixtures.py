"""Throwaway LoRA adapters on the bundled base, for tests, the benchmark and smoke runs (no training).

    python -m eval.fixtures /tmp/adapters/tiny_a --seed 1            # adapter + run.json (chatml prompt)
    python -m eval /tmp/adapters --tasks fpb --limit 20 --out /tmp/eval_smoke

The LoRA B matrices are set to small seeded random values (peft initialises B to zero, which would make
the adapter a no-op), so each adapter changes the model a little, deterministically. run.json is always
written through RunRecord (lora/core/run_record.py), the contract training writes, never by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lora.core.base_model import ensure_base_model
from lora.core.files import REPO_ROOT, repo_relative, write_json_atomic
from lora.core.prompts import prompt_format_record
from lora.core.run_record import RunRecord

BUNDLED_REF = "models/base_model/smollm2-135m-instruct"
SIX_TASKS = ("fpb", "tfns", "ner", "formula", "xbrl_term", "financebench")


def six_task_registry(folder: Path) -> Path:
    """A task registry of the six tasks whose data the repository always shipped (fpb/formula/xbrl_term/
    financebench with train files, tfns/ner without), for tests that must not change when eval/tasks.json
    grows. Entries are eval/tasks.json's, with absolute data paths; written to folder/six_tasks.json."""
    shipped = json.loads((REPO_ROOT / "eval" / "tasks.json").read_text(encoding="utf-8"))
    reg = {}
    for name in SIX_TASKS:
        train = REPO_ROOT / "data" / "train" / f"{name}_train.jsonl"
        reg[name] = {**{k: v for k, v in shipped[name].items() if k not in ("data", "train")},
                     "data": str(REPO_ROOT / "data" / "test" / f"{name}_test.jsonl"),
                     "train": str(train) if train.is_file() and name not in ("tfns", "ner") else None}
    path = folder / "six_tasks.json"
    path.write_text(json.dumps(reg), encoding="utf-8")
    return path


def run_record(name: str, status: str = "complete", prompt_format: str = "chatml", base_model: str = BUNDLED_REF,
               **facts) -> RunRecord:
    """A run.json as training writes it (schema 2), for fixtures and tests."""
    return RunRecord(name=name, status=status, base_model=base_model,
                     prompt_format=prompt_format_record(prompt_format), **facts)


def make_fake_adapter(folder: Path, base: str = BUNDLED_REF, run: RunRecord | None = None,
                      weights: bytes | None = None) -> Path:
    """An adapter folder with a one-tensor weights file (or `weights` bytes as given): enough for
    discovery and planning, not for loading."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "adapter_config.json", {"base_model_name_or_path": base, "peft_type": "LORA", "r": 2})
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    else:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"base_model.model.x.lora_A.weight": np.zeros((2, 2), dtype=np.float32)},
                  str(folder / "adapter_model.safetensors"))
    if run is not None:
        run.write(folder)
    return folder


def make_tiny_adapter(out_dir: Path | str, base_path: Path | str | None = None, seed: int = 0, r: int = 4,
                      scale: float = 0.02, prompt_format: str | None = "chatml", status: str = "complete",
                      name: str | None = None, target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
                      use_dora: bool = False, use_rslora: bool = False, quant_bits: int | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (+ run.json unless prompt_format is None).
    use_dora / use_rslora: the peft variants FinLoRA trains (DoRA's magnitude vector is perturbed too, so a
    merge that ignored it would show). quant_bits: written into run.json's entry as training writes it
    (the weights are the same; lora/use/merge.py then takes the 4/8-bit base as the reference)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if base_path is None:
        base_path = ensure_base_model(quiet=True)
    out_dir = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_path), local_files_only=True, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.0,
                        task_type="CAUSAL_LM", use_dora=use_dora, use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in peft_model.named_parameters():
            if "lora_B" in pname:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
            elif "lora_magnitude_vector" in pname:
                param.mul_(1 + torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(str(out_dir))
    # run.json writes the base as the training side does: relative to the repo root when inside it.
    base_ref = repo_relative(base_path, REPO_ROOT)
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_ref
    write_json_atomic(cfg_path, cfg)
    if prompt_format is not None:
        entry = {"fixture": True, "seed": seed, **({"quant_bits": quant_bits} if quant_bits else {})}
        run_record(name or out_dir.name, status, prompt_format, base_ref, entry=entry).write(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.fixtures", description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--r", type=int, default=4)
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--prompt-format", default="chatml", help="written into run.json; 'none': no run.json")
    p.add_argument("--status", default="complete")
    args = p.parse_args(argv)
    fmt = None if args.prompt_format == "none" else args.prompt_format
    print(make_tiny_adapter(args.out, seed=args.seed, r=args.r, scale=args.scale, prompt_format=fmt, status=args.status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
