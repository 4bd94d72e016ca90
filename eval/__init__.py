"""Batch evaluation of LoRA adapters against their base model on the finance test sets.

    python -m eval lora_adapters/<name> --tasks fpb --out eval_results/demo --limit 100
    python -m eval score --task fpb --predictions preds.jsonl

See docs/eval.md.
"""
