"""`finlora`: one command, one verb per stage of the pipeline.

    finlora --help                              # the verbs, one line each
    finlora list                                # the registry's entries, data present?, last run
    finlora train sentiment_smollm2_cpu         # render recipes/<name>.yaml and train it
    finlora eval lora_adapters/ --tasks fpb     # base vs adapters on FinLoRA's benchmark
    finlora VERB --help                         # that verb's options

Each verb is one module of this package with the same two functions: `register(parser)` adds its options
(the shared ones come from lora/cli/options.py) and `run(args) -> int` does the work. A verb's module is
imported only when that verb runs, so `finlora --help` and the light verbs never load torch or numpy.
`python finetune.py …` and `python -m eval …` (FinLoRA's entry points) are translated into these verbs by
lora/cli/shims.py. Bad input anywhere: one `error:` line on stderr and exit code 2, nothing written.
"""
from __future__ import annotations

import importlib
import sys
from argparse import Namespace

from lora.cli.options import check_numbers
from lora.core.errors import OneLineParser, UserError, did_you_mean

PROG = "finlora"
VERSION = "0.1.0"

# verb -> one line for `finlora --help`, in pipeline order: recipe, train, pod, eval, use.
VERBS = {
    "list": "the registry's entries: model, quant, rank, profile, prompt, last run, data present?",
    "show": "one entry as the recipe sees it: its keys, the defaults that apply, data files, recipe, last run",
    "render": "write recipes/<name>.yaml for every entry (or those named); --check reports stale ones",
    "plan": "memory per GPU, steps, hours and cost of an entry on its profile (or --profile); nothing runs",
    "check": "pre-flight this machine for an entry: driver, GPUs, memory, attention, disk, model, token",
    "train": "render an entry's recipe and train it with accelerate + axolotl (--dry-run: validate, print)",
    "queue": "train several entries one after another, evaluate each, one table at the end (resumable)",
    "sweep": "train the product of KEY=V1,V2 values over one entry, as a queue",
    "sky": "rent a GPU machine through SkyPilot and train an entry there",
    "eval": "evaluate adapters and their base on FinLoRA's financial benchmark; base-vs-adapter tables",
    "score": "re-score a predictions file with a task's metric (no model loaded)",
    "report": "re-lay a finished eval's results.json (FinLoRA's table layout and its published numbers)",
    "infer": "ask an adapter (or its base, or a merged model) with the prompt it was trained on",
    "merge": "merge an adapter into its base and save a standalone model, verified against the adapter",
    "demo": "a browser page: the base and each adapter answer side by side",
}


def overview() -> str:
    width = max(map(len, VERBS))
    lines = [f"usage: {PROG} VERB [options]   ({PROG} VERB --help for a verb's options)", "",
             "Named LoRA recipes for financial LLMs, trained with Axolotl and evaluated on FinLoRA's benchmark.", "",
             "verbs:"]
    lines += [f"  {verb:{width}s}  {text}" for verb, text in VERBS.items()]
    lines += ["", "FinLoRA's entry points work unchanged: python finetune.py NAME [flags], python -m eval [flags]."]
    return "\n".join(lines)


def verb_module(verb: str):
    if verb not in VERBS:
        raise UserError(f"unknown verb {verb!r}{did_you_mean(verb, VERBS)} (see {PROG} --help)")
    # Imported on use: the eval and use verbs pull in numpy/torch, which `finlora list` must not pay for.
    return importlib.import_module(f"lora.cli.verbs.{verb}")


def parse(argv: list[str], invocation: tuple[str, ...] | None = None) -> Namespace:
    """argv = [VERB, options…] -> the verb's parsed options, with `verb` and `invocation` (the command as the
    user typed it, recorded in what the run writes) set."""
    verb, rest = argv[0], list(argv[1:])
    module = verb_module(verb)
    parser = OneLineParser(prog=f"{PROG} {verb}", description=(module.__doc__ or VERBS[verb]).split("\n\n")[0])
    module.register(parser)
    parse_with = parser.parse_intermixed_args if getattr(module, "INTERMIXED", False) else parser.parse_args
    args = parse_with(rest)
    check_numbers(args)
    args.verb = verb
    args.invocation = invocation or (PROG, *argv)
    return args


def run(argv: list[str], invocation: tuple[str, ...] | None = None) -> int:
    """Parse and run one verb; a UserError anywhere is one `error:` line and its exit code (2)."""
    try:
        args = parse(argv, invocation)
        return verb_module(args.verb).run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(overview(), file=sys.stderr)
        print(f"error: give a verb (see {PROG} --help)", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(overview())
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {VERSION}")
        return 0
    return run(argv)
