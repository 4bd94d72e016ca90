"""finlora merge: merge a LoRA adapter into its base and save a standalone model, verified against the adapter.

    finlora merge sentiment_smollm2_cpu                        # -> merged/sentiment_smollm2_cpu (bf16)
    finlora merge lora_adapters/x --out /tmp/x-merged --dtype fp32 --verify-rows 64
    finlora merge x --checkpoint latest                        # an unfinished run's newest checkpoint

The work is lora/use/merge.py (decide, then do); this module is its options.
"""
from __future__ import annotations

from argparse import Namespace

from lora.use import merge
from lora.use.merge import DEFAULT_MIN_QUANT_AGREEMENT, DEFAULT_VERIFY_ROWS, DTYPES


def register(p) -> None:
    p.add_argument("adapter", help="NAME (lora_adapters/NAME) or an adapter folder")
    p.add_argument("--out", help="the merged model folder (default: merged/<name>)")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="saved weights' dtype (default bf16)")
    p.add_argument("--verify-rows", type=int, default=DEFAULT_VERIFY_ROWS,
                   help=f"rows of the adapter's tasks answered by both (default {DEFAULT_VERIFY_ROWS})")
    p.add_argument("--min-agreement", type=float,
                   help="accepted share of identical answers (default: fp32 1.0, bf16/fp16 0.9)")
    p.add_argument("--min-quant-agreement", type=float, default=DEFAULT_MIN_QUANT_AGREEMENT,
                   help="4/8-bit-trained adapters: accepted agreement with the adapter on its quantized base "
                        "(default 0: recorded, not enforced)")
    p.add_argument("--checkpoint", help="latest | checkpoint-N: merge a checkpoint of an unfinished run")
    p.add_argument("--base-model", help="a local base folder, when the recorded one is elsewhere")
    p.add_argument("--prompt-format", help="only for an adapter without run.json: the format it was trained with")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--force", action="store_true", help="replace a non-empty --out (after verification)")


def run(args: Namespace) -> int:
    p = merge.plan(args)
    merge.quiet()
    return merge.execute(p)
