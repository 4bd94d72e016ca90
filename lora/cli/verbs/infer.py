"""finlora infer: ask a trained adapter (or its base) something, with the prompt it was trained on.

    finlora infer sentiment_smollm2_cpu "Operating profit rose to EUR 13.1 mn."
    finlora infer sentiment_smollm2_cpu --base "Operating profit rose to EUR 13.1 mn."   # the base alone
    finlora infer lora_adapters/x --file questions.jsonl --out answers.jsonl
    finlora infer sentiment_smollm2_cpu --chat                                          # streamed, line by line
    finlora infer merged/sentiment_smollm2_cpu "..."                                    # a finlora merge folder

The work is lora/use/infer.py (decide, then do); this module is its options.
"""
from __future__ import annotations

from argparse import BooleanOptionalAction, Namespace

from lora.use import infer
from lora.use.infer import DEFAULT_MAX_NEW_TOKENS
from lora.use.merge import quiet

INTERMIXED = True  # a flag between NAME and the text


def register(p) -> None:
    p.add_argument("adapter", help="NAME (lora_adapters/NAME), an adapter folder, or a finlora merge folder")
    p.add_argument("text", nargs="?", help="the question (the row's context)")
    p.add_argument("--file", help="JSONL rows with \"context\" or \"text\"; answers go to --out")
    p.add_argument("--out", help="with --file: the JSONL written (each row plus \"output\")")
    p.add_argument("--chat", action="store_true", help="interactive: one question per line, streamed answers")
    p.add_argument("--base", action="store_true", help="ask the base model (adapter off), same prompt")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--one-line", action=BooleanOptionalAction, default=None,
                   help="stop at the newline after the answer (default: when the adapter's tasks are one-line)")
    p.add_argument("--checkpoint", help="latest | checkpoint-N: use a checkpoint of an unfinished run")
    p.add_argument("--base-model", help="a local base folder, when the recorded one is elsewhere")
    p.add_argument("--prompt-format", help="only for an adapter without run.json: the format it was trained with")
    p.add_argument("--quant", type=int, choices=(4, 8, 16), help="load the base in 4/8-bit or 16-bit (as eval --base-quant)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: Namespace) -> int:
    p, batch_size = infer.plan(args)
    quiet()
    return infer.execute(p, batch_size)
