"""Prompt formats: how a row's `context` is wrapped before the `target` is appended.

Training (the rendered axolotl recipe) and evaluation (eval/, via run.json) use the same template, so
an adapter is always tested with the prompt it was trained on. A template holds one `{context}`
placeholder; the target follows the template directly and is closed by the tokenizer's EOS token,
which axolotl appends and trains (so generation learns to stop).
"""
from __future__ import annotations

PROMPT_FORMATS: dict[str, str] = {
    # ChatML, as SmolLM2 / Qwen chat templates write a user turn and open the assistant turn.
    "chatml": "<|im_start|>user\n{context}<|im_end|>\n<|im_start|>assistant\n",
    # Llama 3.x Instruct chat turn; the tokenizer adds <|begin_of_text|> itself.
    "llama3_chat": (
        "<|start_header_id|>user<|end_header_id|>\n\n{context}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    # FinLoRA's own training format (its axolotl template); the default for FinLoRA entries.
    "finlora_inst": "[INST] {context} [/INST]",
    # The context as it is, as FinLoRA's evaluation feeds it.
    "raw": "{context}",
}
DEFAULT_PROMPT_FORMAT = "finlora_inst"


def template_for(name: str) -> str:
    return PROMPT_FORMATS[name]


def apply(template: str, context: str) -> str:
    # str.replace, not str.format: contexts contain braces ("{negative/neutral/positive}").
    return template.replace("{context}", context)


def prompt_format_record(name: str) -> dict:
    """What run.json stores, so the eval package needs no registry to rebuild the prompt."""
    return {"name": name, "template": PROMPT_FORMATS[name]}
