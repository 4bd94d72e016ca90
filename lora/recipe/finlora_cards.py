"""FinLoRA's published adapters as data: their Axolotl cards, their PEFT configs, and what a config learns.

    learned(cfg, axolotl="0.9.1")   # a card or FinLoRA generator output, as axolotl 0.9.1 trained it
    learned(cfg, axolotl="0.19")    # one of our rendered recipes, as axolotl 0.19 trains it

`learned` keeps exactly the keys that change what is learned (LEARNING_KEYS) and says, in EXCLUDED,
why each other key of a card does not; tests compare rendered recipes with the cards through it, and
docs/registry.md's disagreement table is generated from the same data (lora/recipe/registry_doc.py).
Files under data/finlora/ are FinLoRA's, unchanged (commit 7e1cf82).
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path, PurePosixPath

import yaml

from lora.core.files import REPO_ROOT
from lora.recipe.defaults import finlora_optimizer
from lora.recipe.registry import load_registry
from lora.recipe.render import DEFAULT_REGISTRY, recipe_inputs, render

FINLORA_DIR = REPO_ROOT / "data" / "finlora"
CARDS_DIR = FINLORA_DIR / "adapter_cards"
PEFT_DIR = FINLORA_DIR / "adapter_configs"
FINLORA_REGISTRIES = ("finetune_configs.json", "finetune_configs_multi.json", "finetune_configs_plain.json")
VARIANTS = ("8bits_r8_rslora", "8bits_r8_dora", "8bits_r8", "4bits_r4", "fp16_r8")  # longest prefix first

# An ungated re-upload of Meta's Llama-3.1-8B-Instruct; one card (8bits_r8 finer) names it.
BASE_MODEL_ALIASES = {"NousResearch/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct"}

# Every key that changes what is learned, compared card vs recipe (after `learned` normalises them).
LEARNING_KEYS = (
    "base_model", "tokenizer_type", "dataset_file", "prompt", "train_on_inputs", "special_tokens",
    "micro_batch_size", "gradient_accumulation_steps", "num_epochs", "max_steps", "learning_rate",
    "lr_scheduler", "warmup", "optimizer", "weight_decay", "seed",
    "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "peft_use_dora", "peft_use_rslora",
    "quantization", "val_set_size", "sequence_len", "sample_packing", "pad_to_sequence_len",
    "bf16", "fp16", "tf32", "gradient_checkpointing", "zero_stage",
)
# Card keys that do not change what is learned, and why.
EXCLUDED = {
    "output_dir": "where the adapter is written",
    "dataset_prepared_path": "where the tokenised cache is written",
    "wandb_project": "logging", "wandb_entity": "logging", "wandb_watch": "logging (gradient histograms)",
    "wandb_name": "logging", "wandb_log_model": "logging",
    "logging_steps": "how often the loss is printed",
    "evals_per_epoch": "eval loss on the held-out split; nothing is selected by it",
    "saves_per_epoch": "checkpoint cadence; checkpoints are copies, not inputs",
    "resume_from_checkpoint": "null: a fresh start (resuming restores the same state)",
    "lora_model_dir": "null: no adapter to start from",
    "flash_attention": "an attention kernel: the same attention, padding masked",
    "chat_template": "sets tokenizer.chat_template; the `format` prompt strategy never reads it",
    "model_type": "LlamaForCausalLM is what AutoModelForCausalLM loads for a Llama config",
    "adapter": "folded into `quantization` (axolotl 0.19 quantises 4-bit only for adapter qlora)",
    "load_in_8bit": "folded into `quantization`", "load_in_4bit": "folded into `quantization`",
    "bnb_4bit_use_double_quant": "folded into `quantization` (not an axolotl key: dropped by its schema)",
    "bnb_4bit_quant_type": "folded into `quantization` (not an axolotl key: dropped by its schema)",
    "bnb_4bit_compute_dtype": "folded into `quantization` (not an axolotl key: dropped by its schema)",
    "deepspeed": "folded into `zero_stage` (the file's path is where it lives)",
    "datasets": "folded into `dataset_file` (the file name; the folder is where it lives) and `prompt`",
}

_TORCH_DTYPE = "bfloat16"  # bf16 on the A5000 (bf16: auto / true), axolotl's compute dtype for QLoRA


def _quantization(cfg: dict, axolotl: str) -> dict | None:
    if cfg.get("load_in_8bit"):
        return {"bits": 8}
    if not cfg.get("load_in_4bit"):
        return None
    if axolotl == "0.9.1" and cfg.get("adapter") == "lora":
        # utils/models.py (v0.9.1) passes load_in_4bit=True to transformers 4.51.3's from_pretrained, which
        # builds BitsAndBytesConfig(load_in_4bit=True) from its defaults; top-level bnb_4bit_* keys never reach it.
        return {"bits": 4, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False,
                "bnb_4bit_compute_dtype": "float32"}
    if cfg.get("adapter") == "qlora":  # loaders/model.py's qlora config, updated by bnb_config_kwargs
        kwargs = {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                  "bnb_4bit_compute_dtype": _TORCH_DTYPE, **(cfg.get("bnb_config_kwargs") or {})}
        return {"bits": 4, **{k: kwargs[k] for k in ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                                                     "bnb_4bit_compute_dtype")}}
    return {"bits": 16, "note": "axolotl 0.19 loads lora + load_in_4bit unquantised"}


def _targets(cfg: dict):
    if cfg.get("lora_target_linear"):
        return "all-linear"
    return sorted(cfg.get("lora_target_modules") or [])


def _warmup(cfg: dict) -> tuple:
    if cfg.get("warmup_steps") is not None:
        return ("steps", cfg["warmup_steps"])
    return ("ratio", cfg.get("warmup_ratio") or 0.0)


def _zero_stage(cfg: dict) -> int | None:
    path = cfg.get("deepspeed")
    match = re.search(r"zero(\d)", PurePosixPath(path).name) if path else None
    return int(match.group(1)) if match else None


def _prompt(cfg: dict) -> dict:
    kind = cfg["datasets"][0]["type"]
    return {"format": kind["format"], "no_input_format": kind.get("no_input_format"),
            "field_instruction": kind["field_instruction"], "field_output": kind["field_output"],
            "system_prompt": kind.get("system_prompt") or ""}  # user_defined.py: "" when absent


def learned(cfg: dict, axolotl: str) -> dict:
    """The LEARNING_KEYS of an Axolotl config, absent keys as axolotl's defaults, under that version."""
    bf16 = cfg.get("bf16")
    view = {
        "base_model": BASE_MODEL_ALIASES.get(cfg["base_model"], cfg["base_model"]),
        "tokenizer_type": cfg.get("tokenizer_type") or "AutoTokenizer",
        "dataset_file": PurePosixPath(cfg["datasets"][0]["path"]).name,
        "prompt": _prompt(cfg),
        "train_on_inputs": bool(cfg.get("train_on_inputs", False)),
        "special_tokens": dict(cfg.get("special_tokens") or {}),
        "micro_batch_size": cfg["micro_batch_size"],
        "gradient_accumulation_steps": cfg.get("gradient_accumulation_steps", 1),
        "num_epochs": float(cfg.get("num_epochs", 1)),
        "max_steps": cfg.get("max_steps"),
        "learning_rate": float(cfg["learning_rate"]),
        "lr_scheduler": cfg.get("lr_scheduler", "cosine"),
        "warmup": _warmup(cfg),
        "optimizer": cfg.get("optimizer"),
        "weight_decay": float(cfg.get("weight_decay") or 0.0),
        "seed": cfg.get("seed") or 42,  # 0.9.1 and 0.19: `cfg.seed or 42` for the split, 42 for the trainer
        "lora_r": cfg["lora_r"],
        "lora_alpha": cfg.get("lora_alpha"),
        "lora_dropout": float(cfg.get("lora_dropout") or 0.0),
        "lora_target_modules": _targets(cfg),
        "peft_use_dora": bool(cfg.get("peft_use_dora")),
        "peft_use_rslora": bool(cfg.get("peft_use_rslora")),
        "quantization": _quantization(cfg, axolotl),
        "val_set_size": float(cfg.get("val_set_size") or 0.0),
        "sequence_len": cfg.get("sequence_len", 2048),
        "sample_packing": bool(cfg.get("sample_packing")),
        "pad_to_sequence_len": bool(cfg.get("pad_to_sequence_len")),
        "bf16": True if bf16 == "auto" else bool(bf16),  # auto: bf16 on the A5000 (Ampere)
        "fp16": bool(cfg.get("fp16")),
        "tf32": bool(cfg.get("tf32")),
        "gradient_checkpointing": bool(cfg.get("gradient_checkpointing")),
        "zero_stage": _zero_stage(cfg),
    }
    assert tuple(view) == LEARNING_KEYS
    return view


def entry_name(card_stem: str) -> str:
    """`8bits_r8_dora_finer_llama_3_1_8B_8bits_r8_dora` -> `finer_llama_3_1_8b_8bits_r8_dora`."""
    variant = next(v for v in VARIANTS if card_stem.startswith(v + "_"))
    return card_stem[len(variant) + 1:].lower()


@cache
def cards() -> dict[str, tuple[Path, dict]]:
    """Published adapter name -> (card file, its Axolotl config)."""
    return {entry_name(p.stem): (p, yaml.safe_load(p.read_text(encoding="utf-8")))
            for p in sorted(CARDS_DIR.glob("*.yaml"))}


@cache
def peft_configs() -> dict[str, tuple[Path, dict]]:
    """Published adapter name -> (adapter_config.json, its PEFT config)."""
    return {entry_name(p.stem): (p, json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(PEFT_DIR.glob("*.json"))}


@cache
def finlora_registries() -> dict[str, dict]:
    return {f: json.loads((FINLORA_DIR / f).read_text(encoding="utf-8")) for f in FINLORA_REGISTRIES}


# What FinLoRA's JSON (through its generator's defaults) says vs what its card says: the JSON key (or the
# generator's choice) and the card key for each hyper-parameter where they can differ.
_JSON_VS_CARD = {
    "batch_size": "micro_batch_size", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "num_epochs": "num_epochs", "learning_rate": "learning_rate", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
    "dataset_path": "datasets", "base_model": "base_model", "optimizer": "optimizer",
    "tokenizer_type": "tokenizer_type",
}


def _generator_value(key: str, run: dict):
    quant = run.get("quant_bits")
    if key == "optimizer":
        return finlora_optimizer(quant)
    if key == "tokenizer_type":  # finetune.py sets LlamaTokenizerFast for Llama-3; the plain one AutoTokenizer
        return "LlamaTokenizerFast" if quant in (4, 8) and "Llama-3" in run["base_model"] else "AutoTokenizer"
    if key == "lora_alpha":
        return run.get("lora_alpha", 16)
    if key == "dataset_path":
        return PurePosixPath(run["dataset_path"]).name
    return run.get(key)


def _card_value(key: str, card: dict):
    if key == "datasets":
        return PurePosixPath(card["datasets"][0]["path"]).name
    return card.get(key, "AutoTokenizer" if key == "tokenizer_type" else None)


def json_card_disagreements() -> list[dict]:
    """Every (run, key) where FinLoRA's registry JSON (with its generator's defaults) and the run's card differ."""
    rows = []
    for file, runs in finlora_registries().items():
        for name, run in runs.items():
            if name not in cards():
                continue
            path, card = cards()[name]
            for key, card_key in _JSON_VS_CARD.items():
                ours, theirs = _generator_value(key, run), _card_value(card_key, card)
                if ours != theirs:
                    rows.append({"file": file, "run": name, "key": key, "json": ours, "card": theirs,
                                 "card_file": path.name})
    return rows


# Where our finlora set follows the published cards rather than FinLoRA's current generator.
FOLLOW_CARDS_OVER_GENERATOR = {
    "tokenizer_type": "finetune.py now writes LlamaTokenizerFast for Llama-3; all 31 cards trained with AutoTokenizer",
}


def catalogue_vs_cards(registry_path: Path | None = None) -> dict[str, list[str]]:
    """Published adapter name -> the LEARNING_KEYS where our catalogue's rendered recipe differs from its card
    (a missing entry is reported as ["<no entry>"])."""
    registry = load_registry(registry_path or DEFAULT_REGISTRY)
    result = {}
    for name, (_path, card) in cards().items():
        if name not in registry.entries:
            result[name] = ["<no entry>"]
            continue
        ours = learned(yaml.safe_load(render(recipe_inputs(registry, name))), axolotl="0.19")
        theirs = learned(card, axolotl="0.9.1")
        result[name] = [k for k in LEARNING_KEYS if ours[k] != theirs[k]]
    return result


def main() -> int:
    """`python -m lora.recipe.finlora_cards`: how many published cards the catalogue reproduces, key by key."""
    diffs = catalogue_vs_cards()
    for name, keys in diffs.items():
        print(f"{'match' if not keys else 'DIFFERS'}  {name}{'' if not keys else ': ' + ', '.join(keys)}")
    matched = sum(not keys for keys in diffs.values())
    print(f"{matched} of {len(diffs)} published cards match on {len(LEARNING_KEYS)} learning keys")
    return 0 if matched == len(diffs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
