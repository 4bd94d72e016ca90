"""FinLoRA's entry points, kept: `python finetune.py NAME [flags]` and `python -m eval …` become `finlora` verbs.

    python finetune.py sentiment_smollm2_cpu --dry-run    # = finlora train sentiment_smollm2_cpu --dry-run
    python finetune.py --list                             # = finlora list
    python finetune.py NAME --plan --json                 # = finlora plan NAME --json
    python finetune.py --queue a b --eval end             # = finlora queue a b --eval end
    python finetune.py NAME --sweep lora_r=4,8            # = finlora sweep NAME lora_r=4,8
    python -m eval lora_adapters/ --tasks fpb             # = finlora eval lora_adapters/ --tasks fpb
    python -m eval score --task fpb --predictions p.jsonl # = finlora score …

finetune.py's mode flags pick the verb (--list, --queue/--match, --sweep, --sky, --plan, --check; otherwise train,
which takes --dry-run) and every other flag goes to that verb unchanged, so a flag the verb does not take is
one `error:` line naming it. What a run records as its command is what the user typed.
"""
from __future__ import annotations

import sys

from lora.cli import overview, run

# finetune.py's mode flag -> verb, in the order the old single parser let them win
FINETUNE_MODES = (("--list", "list"), ("--queue", "queue"), ("--match", "queue"), ("--sweep", "sweep"),
                  ("--sky", "sky"), ("--plan", "plan"), ("--check", "check"))


def finetune_verb(argv: list[str]) -> list[str]:
    """finetune.py's argv -> [verb, options…] (pure). Everything after --on-finish is its command, not a flag."""
    cut = argv.index("--on-finish") if "--on-finish" in argv else len(argv)
    head, tail = argv[:cut], argv[cut:]
    given = {a.split("=", 1)[0] for a in head if a.startswith("--")}
    mode, verb = next(((flag, v) for flag, v in FINETUNE_MODES if flag in given), (None, "train"))
    dropped = () if mode == "--match" else (mode,)  # the verb says it; another mode flag is refused by the verb
    kept = []
    for a in head:
        flag, eq, value = a.partition("=")
        if flag in dropped:
            if eq and flag in ("--queue", "--sweep"):
                kept.append(value)  # --queue=a, --sweep=k=v: their one value stays, as a positional
            continue
        kept.append(a)
    return [verb, *kept, *tail]


def finetune_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help") or argv == ["help"]:
        print(__doc__.split("\n\n")[1])
        print(overview())
        return 0
    return run(finetune_verb(argv), invocation=("python", "finetune.py", *argv))


def eval_verb(argv: list[str]) -> list[str]:
    if argv and argv[0] in ("score", "report"):
        return argv
    return ["eval", *argv]


def eval_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(eval_verb(argv), invocation=("python", "-m", "eval", *argv))
