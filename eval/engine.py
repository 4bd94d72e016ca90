"""The model side: load a base once, attach/detach adapters with peft, batched greedy generation.

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

Merged adapters (--merge-lora auto|on|off, `merge_choice`): an adapter's rows can run on the base's weights with
the adapter merged in (W + scale * B @ A, a new tensor per layer, the originals restored after), which costs
what the base alone costs; auto does so for a bf16 base on the CPU, where peft's unmerged layers were 1.2-1.4x
slower (docs/eval-benchmark.md).

Precision (--precision auto|fp32|bf16, resolved by `eval_precision`): on the CPU, bf16 where it has bf16
matmul instructions (AMX or AVX512-BF16; lora/core/precision.py), else fp32 — CPU half-precision matmuls are
slow only on CPUs without them. On CUDA `auto` keeps the checkpoint's dtype.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lora.core.errors import UserError
from lora.core.files import adapter_weights
from lora.core.precision import choose


@dataclass
class Loaded:
    model: object  # transformers PreTrainedModel (wrapped by peft once an adapter is attached)
    tokenizer: object
    device: torch.device
    dtype: str
    load_seconds: float


@dataclass(frozen=True)
class EvalPrecision:
    """The dtype a full-precision base is loaded in (None: the default, fp32 on CPU / checkpoint's on CUDA),
    what results.json says about it, and the fingerprint value of eval/runner.py (None when it is the default
    that pairs finished before --precision were made with, so they stay finished)."""

    dtype: object  # torch dtype or None
    record: dict
    fingerprint: str | None


def eval_precision(requested: str, quant: int | None, cuda_bf16: bool | None, cpu) -> EvalPrecision:
    """requested: --precision; quant: --base-quant; cuda_bf16: None on a CPU machine, else whether the GPU does
    bf16; cpu: lora.core.precision.CpuFacts (ignored on CUDA). UserError (exit 2) for a bf16 that cannot run."""
    if quant is not None:
        if requested != "auto":
            raise UserError(f"--precision {requested} is for full-precision bases; --base-quant {quant} sets the dtype")
        return EvalPrecision(None, {"used": f"{quant}bit" if quant in (4, 8) else "bf16/fp16", "requested": requested,
                                    "why": f"--base-quant {quant}"}, None)
    if cuda_bf16 is not None:
        if requested == "auto":
            return EvalPrecision(None, {"used": "checkpoint dtype", "requested": requested, "why": "CUDA: auto keeps "
                                        "the checkpoint's dtype"}, None)
        if requested == "bf16" and not cuda_bf16:
            raise UserError("--precision bf16: this GPU does not support bf16; use --precision fp32 or auto")
        return EvalPrecision(torch.bfloat16 if requested == "bf16" else torch.float32,
                             {"used": requested, "requested": requested, "why": f"--precision {requested} (CUDA)"},
                             f"cuda-{requested}")
    chosen = choose(requested, cpu)
    return EvalPrecision(torch.bfloat16 if chosen.bf16 else torch.float32, chosen.record(),
                         chosen.name if chosen.bf16 else None)


def load_base(path: str, quant: int | None = None, dtype=None) -> Loaded:
    """Load tokenizer + model from a local folder, never the hub. quant: None = full precision on CPU
    (fp32 unless dtype says otherwise: eval passes eval_precision's choice) or the checkpoint's dtype on
    CUDA; 16 = bf16 (fp16 where bf16 is unsupported); 4/8 = bitsandbytes, as a 4/8-bit QLoRA base is loaded
    for training. dtype (a torch dtype, quant None only) overrides the full-precision choice: lora/use/merge.py
    merges in fp32 on any device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    cuda = torch.cuda.is_available()
    # the current CUDA device: 0, or this rank's GPU in a multi-process run (eval/distributed.py sets it)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    kwargs: dict = {"local_files_only": True, "trust_remote_code": False}
    if quant in (4, 8):
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
            if quant == 4 else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": device.index if cuda else "cpu"}
    elif quant == 16:
        kwargs["dtype"] = torch.bfloat16 if (not cuda or torch.cuda.is_bf16_supported()) else torch.float16
    else:
        kwargs["dtype"] = dtype if dtype is not None else ("auto" if cuda else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    dtype = f"{quant}bit" if quant in (4, 8) else str(next(model.parameters()).dtype).replace("torch.", "")
    return Loaded(model, tokenizer, device, dtype, time.monotonic() - t0)


def disable_progress_bars() -> None:
    """--no-progress also silences transformers' "Loading weights" bar."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class AdapterHost:
    """The base, loaded once, with adapters attached one at a time (peft load_adapter / set_adapter /
    delete_adapter). The base row is generated with adapters disabled, so it needs no second copy.
    merge (--merge-lora auto|on|off): whether an adapter's rows run on merged weights (merge_choice)."""

    def __init__(self, loaded: Loaded, merge: str = "off"):
        if merge not in MERGE_REQUESTS:
            raise ValueError(f"merge: one of {MERGE_REQUESTS}, not {merge!r}")
        self.loaded = loaded
        self.merge = merge
        self.peft_model = None  # created by the first attach
        self.merge_choices: dict[str, MergeChoice] = {}  # attached adapter -> merged or not, and why
        self._merged: dict[str, list] = {}  # adapter -> merged_weights, computed once for all of its pairs

    def attach(self, name: str, path: str) -> None:
        from peft import PeftModel

        try:
            if self.peft_model is None:
                self.peft_model = PeftModel.from_pretrained(self.loaded.model, path, adapter_name=name, is_trainable=False)
            else:
                self.peft_model.load_adapter(path, adapter_name=name, is_trainable=False)
            self.peft_model.set_adapter(name)
            check_all_weights_loaded(self.peft_model, name, Path(path))
            if self.merge != "off":
                self.merge_choices[name] = self._merge_choice(name)
        except BaseException:
            # A half-attached adapter (layers injected, weights not loaded) must not leak into the
            # next row: remove whatever got registered under this name.
            self.detach(name)
            raise
        self.peft_model.eval()

    def _merge_choice(self, name: str) -> MergeChoice:
        blocker = merge_blocker(self.peft_model, name)
        copy_bytes = merged_copy_bytes(self.peft_model, name) if blocker is None else 0  # only Linear layers then
        return merge_choice(self.merge, self.loaded.dtype, self.loaded.device.type == "cuda", blocker, copy_bytes,
                            free_memory_bytes(self.loaded.device))

    def detach(self, name: str) -> None:
        self.merge_choices.pop(name, None)
        self._merged.pop(name, None)
        pm = self.peft_model
        if pm is not None and name in getattr(pm, "peft_config", {}):
            with contextlib.suppress(Exception):
                pm.delete_adapter(name)
        elif pm is None:
            _strip_injected(self.loaded.model, name)

    def model_for(self, adapter: str | None):
        """(model, context manager): the adapter's model, or the base with every adapter disabled."""
        if adapter is None:
            if self.peft_model is None:
                return self.loaded.model, contextlib.nullcontext()
            return self.peft_model, self.peft_model.disable_adapter()
        choice = self.merge_choices.get(adapter)
        if choice is not None and choice.merge:
            if adapter not in self._merged:
                self._merged[adapter] = merged_weights(self.peft_model, adapter)
            return self.peft_model, merged_into_base(self.peft_model, adapter, self._merged[adapter])
        return self.peft_model, contextlib.nullcontext()


# ---------------------------------------------------------------- merged LoRA weights (--merge-lora)

MERGE_REQUESTS = ("auto", "on", "off")


@dataclass(frozen=True)
class MergeChoice:
    """Whether one attached adapter's rows run on merged weights, and why (results.json records it)."""

    merge: bool
    why: str

    def record(self) -> dict:
        return {"merged": self.merge, "why": self.why}


def merge_choice(requested: str, dtype: str, cuda: bool, blocker: str | None, copy_bytes: int,
                 free_bytes: int | None) -> MergeChoice:
    """Pure. requested: --merge-lora; dtype: the loaded base's (Loaded.dtype); blocker: why this adapter cannot
    be merged (merge_blocker), else None; copy_bytes: the merged weights held beside the base's while it runs;
    free_bytes: free memory on the base's device (None: unknown).

    auto merges a half-precision base on the CPU only: there peft's unmerged layers (fp32 LoRA weights beside
    bf16 base weights, two skinny matmuls and casts per layer) made an adapter's generation 1.2-1.4x slower than
    merged weights, which cost what the base costs (docs/eval-benchmark.md). An fp32 base keeps the
    unmerged layers (their outputs are FinLoRA's harness's, token for token; merging changes rounding); on CUDA
    it is not measured, so merging is asked for with `on`."""
    if requested == "off":
        return MergeChoice(False, "--merge-lora off")
    if blocker is not None:
        return MergeChoice(False, f"{blocker}: runs unmerged")
    if free_bytes is not None and copy_bytes > free_bytes // 2:
        return MergeChoice(False, f"the merged weights ({copy_bytes / 2**30:.2f} GiB) would take over half the free "
                                  f"memory ({free_bytes / 2**30:.2f} GiB): runs unmerged")
    if requested == "on":
        return MergeChoice(True, "--merge-lora on")
    if cuda:
        return MergeChoice(False, "auto: on CUDA adapters run unmerged (merging is not measured there; "
                                  "--merge-lora on merges)")
    if dtype not in ("bfloat16", "float16"):
        return MergeChoice(False, f"auto: a {dtype} base runs unmerged (outputs as peft computes them)")
    return MergeChoice(True, f"auto: a {dtype} base on the CPU runs merged (unmerged LoRA layers are slow there)")


def _lora_layers(peft_model, name: str) -> list:
    """The tuner layers that hold adapter `name` (every kind: Linear, Embedding, bitsandbytes, ...)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)
            and (name in getattr(m, "lora_A", {}) or name in getattr(m, "lora_embedding_A", {}))]


def merge_blocker(peft_model, name: str) -> str | None:
    """Why adapter `name` cannot run as merged weights, or None. Only plain LoRA on full-precision nn.Linear
    layers is merged: W + scale * B @ A is then the whole adapter. DoRA (a per-column rescale) and other LoRA
    variants, LoRA biases, layers of other kinds (embeddings, bitsandbytes 4/8-bit) and modules_to_save (whole
    trained copies, which the disabled-adapter forward would bypass) run unmerged."""
    from peft.tuners.lora.layer import Linear

    config = peft_model.peft_config[name]
    if getattr(config, "modules_to_save", None):
        return "modules_to_save"
    if getattr(config, "trainable_token_indices", None):
        return "trainable_token_indices"
    for layer in _lora_layers(peft_model, name):
        if type(layer) is not Linear:
            return f"a {type(layer).__module__}.{type(layer).__name__} layer"
        if layer.use_dora.get(name) or name in getattr(layer, "lora_variant", {}):
            return "DoRA or another LoRA variant"
        if getattr(layer, "lora_bias", {}).get(name):
            return "lora_bias"
        if not layer.get_base_layer().weight.dtype.is_floating_point:
            return "a quantised base layer"
    return None


def merged_copy_bytes(peft_model, name: str) -> int:
    """Bytes of the merged weights held while the adapter runs (one new tensor per adapted layer)."""
    return sum(w.numel() * w.element_size() for w in
               (layer.get_base_layer().weight for layer in _lora_layers(peft_model, name)))


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory where the base lives: the GPU's (torch.cuda.mem_get_info) or the machine's available RAM."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown: merge_choice then decides without it
        return None


def merged_weights(peft_model, name: str) -> list:
    """Per layer adapter `name` adapts: (its base layer, a new Parameter W + delta, summed in fp32 and rounded
    once to W's dtype). W itself is not touched."""
    out = []
    with torch.no_grad():
        for layer in _lora_layers(peft_model, name):
            base = layer.get_base_layer()
            w = base.weight
            merged = (w.float() + layer.get_delta_weight(name).to(device=w.device, dtype=torch.float32)).to(w.dtype)
            out.append((base, torch.nn.Parameter(merged, requires_grad=False)))
    return out


@contextlib.contextmanager
def merged_into_base(peft_model, name: str, weights: list | None = None):
    """Adapter `name` as merged weights for the duration: each adapted layer's base weight is swapped for its
    merged one (`weights`, from merged_weights; computed here when None) and every LoRA path is disabled, so the
    forward is the base's own. The original tensors are put back untouched on exit (no W + d - d rounding drift
    across adapters, which peft's merge_adapter/unmerge_adapter would leave in a bf16 base)."""
    weights = merged_weights(peft_model, name) if weights is None else weights
    originals = [(base, base.weight) for base, _ in weights]
    try:
        for base, merged in weights:
            base.weight = merged
        with peft_model.disable_adapter():
            yield peft_model
    finally:
        for base, w in originals:
            base.weight = w


class AdapterMismatch(Exception):
    """The adapter's weights file and the modules its adapter_config.json injects do not correspond."""


def weight_keys(folder: Path) -> set[str]:
    weights = adapter_weights(folder)
    if weights is None:
        return set()
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return set(f.keys())
    return set(torch.load(weights, map_location="cpu", weights_only=True))


def check_all_weights_loaded(peft_model, name: str, folder: Path) -> None:
    """Every tensor in the weights file must land in an injected module, and every injected module must get
    its tensors. peft loads with strict=False: a file whose keys miss the injected modules (target_modules
    edited, keys renamed) loads nothing, and the adapter silently evaluates as the base."""
    from peft.utils import get_peft_model_state_dict

    in_file = weight_keys(folder)
    # The keys save_pretrained would write for this adapter: adapter name removed, as in the file.
    injected = set(get_peft_model_state_dict(peft_model, adapter_name=name, save_embedding_layers=False))
    base_keys = set(peft_model.state_dict())  # full tensors (e.g. resized embeddings) load into the base
    unused = sorted(k for k in in_file - injected if k not in base_keys)
    missing = sorted(injected - in_file)
    if unused or missing:
        parts = []
        if unused:
            parts.append(f"{len(unused)} tensor(s) in the weights file match no injected module (e.g. {unused[0]})")
        if missing:
            parts.append(f"{len(missing)} injected module weight(s) are not in the file (e.g. {missing[0]})")
        raise AdapterMismatch("weights do not match adapter_config.json: " + "; ".join(parts))


def _strip_injected(model, name: str) -> None:
    """Undo a failed first PeftModel.from_pretrained, which injects LoRA layers into the base in place
    before it reads the weights."""
    with contextlib.suppress(Exception):
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in model.modules():
            if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {}):
                module.delete_adapter(name)


# ---------------------------------------------------------------- generation


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
