"""Batched greedy generation, as eval runs it: prompts tokenised as training did, left-padded batches, stop rules.

    python -m eval lora_adapters/<name> --tasks fpb --limit 20      # runs through eval/runner.py

Generation: prompts tokenised one by one exactly as training tokenised them (tokenizer(prompt), default
special tokens), left-padded into batches of similar length (sorted longest first, so padding is small
and a too-large batch fails on the first step), greedy, stopping per row at EOS and — for
classification/numeric tasks — at the first newline after the answer's first non-blank text.

Shared-prefix reuse (--prefix-cache auto, the default: on for fp32 models, off otherwise): every prompt of a task starts with the same chat header
and instruction. The longest common TOKEN prefix of the tokenised prompts (not of the texts: a BPE merge may
cross the text boundary, so only tokens every prompt really has are shared) is run through the model once per
generate() call, i.e. once per (model or adapter, task), and each batch starts from a copy of its KV cache
(generate appends to the cache it is given). Left padding would put pads before the prefix, so a batch is laid
out as [prefix][pads][suffix] with attention mask 1…1 0…0 1…1: transformers numbers positions by the mask's
cumulative sum, so every suffix token keeps the position it has without reuse. In fp32 the greedy outputs are
identical with and without reuse (tests/eval/test_prefix_cache.py, bundled model, fpb and ner, batch 1 and 8,
base and adapter). In bf16 they are not always: the prefix computed alone rounds differently from the prefix
computed inside a padded batch, and one bundled-model output in 32 diverged after 8 tokens; so `auto` reuses
only for fp32 models, and `--prefix-cache on` in bf16 trades identity for the saving.

The model and its adapters are loaded by eval/engine.py; `generate` runs whatever model it is given.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches, longest prompts first; ties keep file order (deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


_TOKEN_TABLES: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _token_tables(tokenizer, vocab_size: int):
    """Per token id: contains a newline; has non-blank text before its first newline; is blank."""
    key = id(tokenizer) * 1_000_003 + vocab_size
    if key not in _TOKEN_TABLES:
        n = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(n)], **decode_kwargs(tokenizer))
        size = max(vocab_size, n)
        nl = torch.zeros(size, dtype=torch.bool)
        nl_after = torch.zeros(size, dtype=torch.bool)
        blank = torch.ones(size, dtype=torch.bool)
        for i, s in enumerate(texts):
            if "\n" in s:
                nl[i] = True
                nl_after[i] = bool(s[: s.index("\n")].strip())
            blank[i] = not s.strip()
        _TOKEN_TABLES[key] = (nl, nl_after, blank)
    return _TOKEN_TABLES[key]


class _StopAtNewline:
    """StoppingCriteria (per row): stop when a newline follows the answer's first non-blank text.
    Leading blank lines are allowed, since some prompts end right before a newline."""

    def __init__(self, tokenizer, vocab_size: int, batch: int, device):
        nl, nl_after, blank = _token_tables(tokenizer, vocab_size)
        self.nl, self.nl_after, self.blank = nl.to(device), nl_after.to(device), blank.to(device)
        self.seen = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores, **kwargs):
        last = input_ids[:, -1]
        stop = self.nl_after[last] | (self.nl[last] & self.seen)
        self.seen |= ~self.blank[last]
        return stop


def decode_kwargs(tokenizer) -> dict:
    """transformers ignores clean_up_tokenization_spaces for BPE tokenizers and warns about it on every
    run; saying False for them changes no output and leaves other tokenizers as configured."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        return {"clean_up_tokenization_spaces": False}
    return {}


def eos_ids(tokenizer, model) -> list[int]:
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in ([gen] if isinstance(gen, int) else list(gen or [])):
        if int(i) not in ids:
            ids.append(int(i))
    return ids


def encode_for_model(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[list[int]], int]:
    """encode_prompts with room for the answer inside the model's context window (when it names one): the
    rule generate() and eval's sharding (which must see generate's batches) both use."""
    window = getattr(model.config, "max_position_embeddings", None)
    return encode_prompts(tokenizer, prompts, window - max_new_tokens if window else None)


def encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int | None) -> tuple[list[list[int]], int]:
    """Token ids per prompt, exactly as training tokenised them; prompts longer than the model's window
    (minus the answer budget) keep their end (the question and answer cue), and are counted."""
    encoded, truncated = [], 0
    for p in prompts:
        ids = list(tokenizer(p)["input_ids"])
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
            truncated += 1
        encoded.append(ids)
    return encoded, truncated


MIN_SHARED_PREFIX = 4  # tokens; shorter is a bare chat header, not worth a pass of its own


def shared_prefix_length(encoded: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own (generation needs an
    uncached token to start from); 0 for fewer than two prompts, where nothing is shared."""
    if len(encoded) < 2:
        return 0
    limit = min(len(e) for e in encoded) - 1
    first = encoded[0]
    n = 0
    while n < limit and all(e[n] == first[n] for e in encoded):
        n += 1
    return n


@dataclass
class GenStats:
    seconds: float
    new_tokens: int
    truncated_prompts: int
    prompt_tokens: int = 0
    shared_prefix_tokens: int = 0  # per prompt, computed once (0: no reuse)


def _prefix_kv(model, prefix: list[int], device):
    """The KV cache of the shared prefix, batch 1 (one forward pass)."""
    ids = torch.tensor([prefix], dtype=torch.long, device=device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values


def _batch_cache(prefix_kv, rows: int):
    """A batch's own copy of the prefix cache: generate() appends to the cache it is given."""
    cache = copy.deepcopy(prefix_kv)
    cache.batch_repeat_interleave(rows)
    return cache


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, stop_at_newline: bool,
             batch_size: int, progress=None, streamer=None, prefix_cache: bool | None = None) -> tuple[list[str], GenStats]:
    """Greedy outputs (new text only, special tokens dropped) in the order of `prompts`. streamer (one
    prompt only; lora/use/infer.py --chat): a transformers streamer that receives the tokens as they come.
    prefix_cache: run the prompts' shared token prefix once and start every batch from its KV cache;
    None (auto): only for an fp32 model, where outputs are identical to no reuse (module docstring)."""
    from transformers import GenerationConfig, StoppingCriteriaList

    if streamer is not None and len(prompts) != 1:
        raise ValueError("a streamer follows one prompt at a time")
    t0 = time.monotonic()
    device = next(model.parameters()).device
    encoded, truncated = encode_for_model(model, tokenizer, prompts, max_new_tokens)
    stops = eos_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad,
    )
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else len(tokenizer)
    if prefix_cache is None:  # a bitsandbytes model's first parameter can be fp32 too: not proven there
        prefix_cache = next(model.parameters()).dtype == torch.float32 and not getattr(model, "is_quantized", False)
    shared = shared_prefix_length(encoded) if prefix_cache and streamer is None else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    prefix_kv = None
    if shared:
        with torch.inference_mode():
            prefix_kv = _prefix_kv(model, encoded[0][:shared], device)
    outputs: list[str | None] = [None] * len(prompts)
    new_tokens = 0
    for batch in batches_by_length([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in batch)
        # Left padding: every row's last prompt token sits at the same position, where generation starts.
        # With a shared prefix the pads go between it and each row's own tokens ([prefix][pads][suffix]).
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        if shared:
            ids[:, :shared] = torch.tensor(encoded[batch[0]][:shared])
            mask[:, :shared] = 1
        for r, i in enumerate(batch):
            own = encoded[i][shared:]
            ids[r, width - len(own):] = torch.tensor(own)
            mask[r, width - len(own):] = 1
        criteria = StoppingCriteriaList([_StopAtNewline(tokenizer, vocab, len(batch), device)]) if stop_at_newline else None
        with torch.inference_mode():
            cache = {"past_key_values": _batch_cache(prefix_kv, len(batch))} if shared else {}
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                stopping_criteria=criteria, streamer=streamer, **cache,
            )
        for r, i in enumerate(batch):
            row = out[r, width:].tolist()
            # Rows that stopped early are filled with pad (often = EOS): cut at the first of either.
            cut = next((k for k, t in enumerate(row) if t in stops or t == pad), len(row))
            new_tokens += cut
            outputs[i] = tokenizer.decode(row[:cut], skip_special_tokens=True, **decode_kwargs(tokenizer))
        if progress is not None:
            progress.update(len(batch))
    stats = GenStats(time.monotonic() - t0, new_tokens, truncated, sum(len(e) for e in encoded), shared)
    return [o or "" for o in outputs], stats
