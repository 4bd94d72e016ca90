"""The model side: load a base once, attach/detach adapters with peft (each adapter's weights checked to land).

    python -m eval lora_adapters/<name> --tasks fpb --limit 20      # runs through eval/runner.py

Generation (batched, greedy, shared-prefix reuse) is eval/generation.py; merged adapters (--merge-lora) are
eval/merged_lora.py, which AdapterHost asks whether an adapter's rows run merged.

Precision (--precision auto|fp32|bf16, resolved by `eval_precision`): on the CPU, bf16 where it has bf16
matmul instructions (AMX or AVX512-BF16; lora/core/precision.py), else fp32 — CPU half-precision matmuls are
slow only on CPUs without them. On CUDA `auto` keeps the checkpoint's dtype.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.merged_lora import (
    MERGE_REQUESTS,
    MergeChoice,
    free_memory_bytes,
    merge_blocker,
    merge_choice,
    merged_copy_bytes,
    merged_into_base,
    merged_weights,
)
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
