"""Token counts of a dataset: the base model's own tokenizer when it is on disk, else a stated estimate."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from lora.core.jsonl import read_jsonl
from lora.estimate.constants import DEFAULT_CHARS_PER_TOKEN
from lora.estimate.facts import local_model_folder


@dataclass(frozen=True)
class TokenCount:
    rows: int
    tokens: int
    max_row_tokens: int
    lengths: tuple[int, ...]
    method: str  # "tokenizer <path>" or "estimate: 4.0 chars/token"
    estimated: bool


def _local_tokenizer_dir(base_model: str, repo_root: Path) -> Path | None:
    local = local_model_folder(base_model, repo_root)
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    try:
        return local if local.is_dir() and any((local / n).is_file() for n in names) else None
    except OSError:  # a name no file system takes (too long): not a local folder
        return None


def _tokenizer_lengths(texts: list[str], tok_dir: Path) -> tuple[list[int] | None, str]:
    """(lengths, method) with the local tokenizer, or (None, why it failed) so the caller estimates."""
    try:
        from transformers import AutoTokenizer  # heavy: only when a local tokenizer exists

        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        return [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]], f"tokenizer {tok_dir}"
    except Exception as exc:  # a broken folder falls back to the stated estimate
        return None, f"(tokenizer at {tok_dir} failed: {type(exc).__name__}) "


def count_tokens(
    dataset_path: Path | str,
    base_model: str,
    repo_root: Path,
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
) -> TokenCount:
    """Tokens per row with the base model's own tokenizer when it is on disk, else chars / chars_per_token.

    Counts the raw row text (FinLoRA's context + target); the prompt template adds a few tokens per row
    that are not counted here. Rows are read by lora.core.jsonl.read_jsonl: a missing file, a bad line or a
    row without string context/target is a one-line UserError naming file:line.
    """
    texts = [row["context"] + row["target"] for _, row in read_jsonl(dataset_path, ("context", "target"), "dataset")]
    tok_dir = _local_tokenizer_dir(base_model, repo_root)
    lengths: list[int] | None = None
    method = ""
    if tok_dir is not None:
        lengths, method = _tokenizer_lengths(texts, tok_dir)
    if lengths is None:
        lengths = [max(1, math.ceil(len(t) / chars_per_token)) for t in texts]
        method += f"estimate: {chars_per_token:g} chars/token"
    return TokenCount(
        rows=len(lengths),
        tokens=sum(lengths),
        max_row_tokens=max(lengths, default=0),
        lengths=tuple(lengths),
        method=method,
        estimated=not method.startswith("tokenizer"),
    )


def padding_factor(lengths: tuple[int, ...] | list[int], micro_batch_size: int, sequence_len: int,
                   seed: int = 0) -> float:
    """Without packing every micro batch is padded to its longest row: padded tokens / real tokens,
    simulated on one shuffled epoch (deterministic seed). Rows are capped at sequence_len."""
    capped = [min(n, sequence_len) for n in lengths]
    if not capped:
        return 1.0
    order = capped[:]
    random.Random(seed).shuffle(order)
    padded = sum(max(order[i : i + micro_batch_size]) * len(order[i : i + micro_batch_size])
                 for i in range(0, len(order), micro_batch_size))
    real = sum(order)
    return padded / real if real else 1.0
