"""Shared by every stage, importing none of them: errors, files, JSONL, names, prompts, precision, run.json, GPUs.

    python -m lora.core.precision    # what `--precision auto` resolves to on this machine
"""
