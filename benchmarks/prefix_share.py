"""How much of each shipped task's prompt tokens eval's shared-prefix reuse computes only once (tokenizer only,
seconds): per task, the longest common token prefix of all its prompts and its share of the prompt tokens.

    python benchmarks/prefix_share.py                    # chatml (the CPU demo's prompt) and finlora_inst
    python benchmarks/prefix_share.py --formats raw

The share is an upper bound on the prefill saved: eval/generation.py shares the prefix of the prompts of one
generate() call (one model × task, all rows), exactly this prefix; decoding is not affected.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.generation import MIN_SHARED_PREFIX, encode_prompts, shared_prefix_length  # noqa: E402
from eval.tasks import load_registry, load_task_data  # noqa: E402
from lora.core.base_model import BUNDLED_MODEL_DIR  # noqa: E402
from lora.core.prompts import PROMPT_FORMATS, apply  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formats", default="chatml,finlora_inst", help="comma-separated prompt formats")
    p.add_argument("--tokenizer", default=str(BUNDLED_MODEL_DIR))
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    registry = load_registry(None)
    print("| task | rows | format | mean prompt tokens | shared prefix tokens | share of prompt tokens |")
    print("|---|---|---|---|---|---|")
    for task in registry.values():
        if not Path(task.data).is_file():
            continue
        data = load_task_data(task)
        for fmt in args.formats.split(","):
            prompts = [apply(PROMPT_FORMATS[fmt], r["context"]) for r in data.rows]
            encoded, _ = encode_prompts(tok, prompts, None)
            shared = shared_prefix_length(encoded)
            used = shared if shared >= MIN_SHARED_PREFIX else 0
            total = sum(len(e) for e in encoded)
            mean = total / len(encoded)
            note = "" if used == shared else f" (below {MIN_SHARED_PREFIX}: not reused)"
            print(f"| {task.name} | {len(encoded)} | {fmt} | {mean:.1f} | {shared}{note} | "
                  f"{100 * used * len(encoded) / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
