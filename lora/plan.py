"""Before a pod is rented: will the recipe fit, how long will it take, what will it cost.

    python finetune.py <name> --plan          # human table (also printed at the top of every launch)
    python finetune.py <name> --plan --json   # one JSON object: peak_gb_per_gpu, steps, hours, cost_usd, ...

This module is the estimator behind those commands, as pure functions:

    arch   = load_arch(base_model, repo_root)            # local config.json, else lora/model_facts.json
    counts = count_tokens(dataset_path, base_model, repo_root)
    inputs = inputs_from_profile(profile, base_model=..., lora_r=..., ..., tokens=counts)
    plan   = estimate(inputs, arch)
    print(format_plan(plan)); plan_to_json(plan); checkpoint_interval_steps(plan, minutes=30)

Memory is counted part by part, per GPU, in GiB (2**30 bytes, what torch and nvidia-smi call "GB"),
for two moments of a run: the *setup* transient (weights being cast between dtypes while the model
is prepared) and the *training* step (resident weights + LoRA state + activations + logits). The
peak is the larger of the two. docs/plan.md explains every part and compares the estimate with
FinLoRA's measured figures. Time comes from a FLOP count and an explicit utilisation assumption.

No network and no torch at import time: architecture facts come from a local config.json or the
shipped table, and transformers is imported lazily only to count tokens with a local tokenizer.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GIB = 2**30
FACTS_PATH = Path(__file__).resolve().parent / "model_facts.json"

# ---- rule-of-thumb constants (named so the docs and the output can cite them) ----------------------
# Utilisation (model FLOPs utilisation, MFU): the fraction of the GPU's dense bf16 peak that a LoRA
# step actually achieves. 0.35 because LoRA on bitsandbytes-quantised bases pays for dequantisation
# kernels, small micro batches and PCIe all-reduces on consumer cards; published LoRA/QLoRA runs sit
# at 25-45%. FinLoRA's own 4xA5000 wall clock implies ~0.3-0.45 on our FLOP count (docs/plan.md), so
# 0.35 errs slightly towards "longer and dearer", which is the safe side when renting.
DEFAULT_UTILISATION = 0.35
DEFAULT_CHARS_PER_TOKEN = 4.0  # English/financial text with Llama-3-class BPE vocabularies
PACKING_EFFICIENCY = 0.95  # multipack fills ~95% of each sequence_len bin
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuBLAS workspaces: on the card, invisible to torch's counters
ALLOCATOR_SLACK = 0.05  # caching-allocator fragmentation: reserved exceeds allocated by a few %
NCCL_BUFFERS_GIB = 0.25  # per GPU when more than one process talks over NCCL
CPU_RUNTIME_GIB = 1.0  # python + torch + transformers + axolotl imports (resident set) on CPU
# DoRA recomputes the weight norm of every adapted matrix each step; that is memory traffic more than
# FLOPs, so the FLOP count misses it. FinLoRA measured DoRA 15.9 h vs LoRA 14.9 h on the same catalogue:
# this factor is that ratio, a fitted constant, not derived.
DORA_TIME_FACTOR = 15.9 / 14.9
# Bytes per element of the logits buffer at the loss: the 16-bit logits (kept in the output object),
# their fp32 upcast for the loss, and log-softmax's fp32 output (kept for backward). On fp32 (CPU) the
# upcast is a no-op, so it is 4 + 4.
LOGITS_BYTES_16BIT = 2 + 4 + 4
LOGITS_BYTES_FP32 = 4 + 4

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class MissingFacts(LookupError):
    """The architecture facts needed for a plan are not available locally. Never guessed."""


# ---- architecture --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelArch:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int
    total_params: int
    max_position_embeddings: int | None = None
    model_type: str | None = None
    source: str = ""  # where the facts came from, shown in the plan

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear in one decoder layer (Llama/Mistral/Qwen layout)."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params_per_layer(self) -> int:
        return sum(a * b for a, b in self.module_shapes().values())

    @property
    def linear_params(self) -> int:
        """Parameters bitsandbytes quantises: the decoder layers' linears (lm_head is skipped)."""
        return self.num_hidden_layers * self.linear_params_per_layer

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def unquantized_params(self) -> int:
        """Everything else: embeddings, lm_head (if untied), norms, biases."""
        return self.total_params - self.linear_params

    @property
    def largest_unquantized_tensor(self) -> int:
        return self.embedding_params


def _derived_total(h: int, i: int, layers: int, q_dim: int, kv_dim: int, vocab: int, tied: bool) -> int:
    per_layer = h * q_dim + 2 * h * kv_dim + q_dim * h + 3 * h * i + 2 * h  # linears + two RMSNorms
    return vocab * h * (1 if tied else 2) + layers * per_layer + h  # + final norm


# HF's class defaults when a saved config omits the key (save_pretrained writes only non-defaults).
_TIE_DEFAULT_FALSE = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma"}


def arch_from_config(config: dict, source: str = "config.json") -> ModelArch:
    """ModelArch from a HF config.json dict (or a model_facts.json entry). Raises MissingFacts."""
    cfg = dict(config.get("text_config") or {}, **{k: v for k, v in config.items() if k != "text_config"})
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in required if not isinstance(cfg.get(k), int) or cfg.get(k) <= 0]
    if missing:
        raise MissingFacts(f"{source} lacks {', '.join(missing)} (needed: {', '.join(required)})")
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    # HF documents num_key_value_heads defaulting to num_attention_heads (plain multi-head attention).
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or h // heads
    model_type = cfg.get("model_type")
    tied = cfg.get("tie_word_embeddings")
    if tied is None:
        tied = model_type not in _TIE_DEFAULT_FALSE  # PretrainedConfig's default is True
    total = cfg.get("total_params") or _derived_total(
        h, cfg["intermediate_size"], cfg["num_hidden_layers"], heads * head_dim, kv_heads * head_dim,
        cfg["vocab_size"], bool(tied),
    )
    return ModelArch(
        hidden_size=h,
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=cfg["vocab_size"],
        tie_word_embeddings=bool(tied),
        head_dim=head_dim,
        total_params=int(total),
        max_position_embeddings=cfg.get("max_position_embeddings"),
        model_type=model_type,
        source=source,
    )


def load_facts_table(path: Path = FACTS_PATH) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_arch(base_model: str, repo_root: Path, facts_path: Path = FACTS_PATH) -> ModelArch:
    """Facts from <base_model>/config.json when it is a local folder, else from the shipped table."""
    looked: list[str] = []
    local = Path(base_model).expanduser()
    if not local.is_absolute():
        local = Path(repo_root) / local
    config_file = local / "config.json"
    if config_file.is_file():
        return arch_from_config(json.loads(config_file.read_text(encoding="utf-8")), source=str(config_file))
    looked.append(f"no config.json at {config_file}")
    table = load_facts_table(facts_path)
    models, aliases = table.get("models", {}), table.get("aliases", {})
    key = aliases.get(base_model, base_model)
    if key not in models:  # hub ids are case-insensitive
        lowered = {k.lower(): k for k in models} | {k.lower(): v for k, v in aliases.items()}
        key = lowered.get(base_model.lower(), key)
    if key in models:
        entry = models[key]
        return arch_from_config(entry, source=f"{facts_path.name}: {key} ({entry.get('source', 'no source')})")
    looked.append(f"not in {facts_path} (known: {', '.join(sorted(models))})")
    raise MissingFacts(
        f"cannot plan for {base_model!r}: missing hidden_size, intermediate_size, num_hidden_layers, "
        f"num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings; looked: "
        + "; ".join(looked)
        + ". Put the model folder (with config.json) on disk or add it to lora/model_facts.json."
    )


# ---- token counts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenCount:
    rows: int
    tokens: int
    max_row_tokens: int
    lengths: tuple[int, ...]
    method: str  # "tokenizer <path>" or "estimate: 4.0 chars/token"
    estimated: bool


def _row_text(row: dict) -> str:
    if "context" in row or "target" in row:  # FinLoRA's format
        return f"{row.get('context', '')}{row.get('target', '')}"
    if isinstance(row.get("messages"), list):
        return "\n".join(str(m.get("content", "")) for m in row["messages"] if isinstance(m, dict))
    return "\n".join(v for v in row.values() if isinstance(v, str))


def _local_tokenizer_dir(base_model: str, repo_root: Path) -> Path | None:
    local = Path(base_model).expanduser()
    if not local.is_absolute():
        local = Path(repo_root) / local
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    return local if local.is_dir() and any((local / n).is_file() for n in names) else None


def count_tokens(
    dataset_path: Path | str,
    base_model: str,
    repo_root: Path,
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
) -> TokenCount:
    """Tokens per row with the base model's own tokenizer when it is on disk, else chars / chars_per_token.

    Counts the raw row text (FinLoRA's context + target); the prompt template adds a few tokens per row
    that are not counted here.
    """
    texts = [
        _row_text(json.loads(line))
        for line in Path(dataset_path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    tok_dir = _local_tokenizer_dir(base_model, repo_root)
    lengths: list[int] | None = None
    method = ""
    if tok_dir is not None:
        try:
            from transformers import AutoTokenizer  # heavy: only when a local tokenizer exists

            tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
            lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
            method = f"tokenizer {tok_dir}"
        except Exception as exc:  # a broken folder falls back to the stated estimate
            method = f"(tokenizer at {tok_dir} failed: {type(exc).__name__}) "
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


def padding_factor(lengths: tuple[int, ...] | list[int], micro_batch_size: int, sequence_len: int, seed: int = 0) -> float:
    """Without packing every micro batch is padded to its longest row: padded tokens / real tokens,
    simulated on one shuffled epoch (deterministic seed). Rows are capped at sequence_len."""
    capped = [min(n, sequence_len) for n in lengths]
    if not capped:
        return 1.0
    order = capped[:]
    random.Random(seed).shuffle(order)
    padded = sum(max(order[i : i + micro_batch_size]) * len(order[i : i + micro_batch_size])
                 for i in range(0, len(order), micro_batch_size))
    return padded / sum(order)


# ---- inputs -------------------------------------------------------------------------------------
class PlanInputs(BaseModel):
    """Everything the estimate depends on. Built by the CLI from a recipe + its hardware profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str
    quant_bits: Literal[4, 8, 16, 32] = 16  # 32 = fp32 weights (the CPU profile)
    lora_r: int = Field(gt=0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_dora: bool = False
    lora_dropout: float = 0.05
    micro_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    sequence_len: int = Field(gt=0)
    num_epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = None
    sample_packing: bool = False
    gradient_checkpointing: bool = True
    zero_stage: Literal[0, 1, 2, 3] | None = None  # None = no DeepSpeed; 0 = DeepSpeed without sharding
    num_gpus: int = Field(default=1, gt=0)  # processes per machine (GPUs; 1 on CPU)
    num_machines: int = Field(default=1, gt=0)
    accelerator: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: float | None = None  # per GPU (GiB); None = unknown, fits is then None
    gpu_tflops: float | None = None  # dense 16-bit peak per GPU; None = no time estimate
    usd_per_gpu_hour: float | None = None
    utilisation: float = Field(default=DEFAULT_UTILISATION, gt=0, le=1)
    optimizer_8bit: bool = False
    attention: Literal["flash", "sdpa", "eager"] = "flash"
    # How the loader casts weights before training (see docs/plan.md):
    #  "embeddings": axolotl: embed_tokens/lm_head/norms to fp32, then back to 16-bit for training;
    #  "all_unquantized": peft's prepare_model_for_kbit_training on its own (FinLoRA's train_lora.py):
    #     every non-quantised tensor to fp32; DeepSpeed (zero_stage not None) casts back to 16-bit;
    #  "none": weights stay as loaded.
    setup_upcast: Literal["embeddings", "all_unquantized", "none"] = "embeddings"
    dataset_rows: int = Field(ge=0)
    dataset_tokens: int = Field(ge=0)
    max_row_tokens: int | None = None  # longest row: sets the activation peak without packing
    padding_factor: float | None = None  # padded/real tokens without packing; None = 1.0 (stated)
    token_method: str = "given"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str) and v != "all-linear":
            return [m.strip() for m in v.split(",") if m.strip()]
        return v

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_machines

    def modules(self) -> tuple[str, ...]:
        return LINEAR_MODULES if self.target_modules == "all-linear" else tuple(self.target_modules)


def inputs_from_profile(profile, *, tokens: TokenCount | None = None, **overrides) -> PlanInputs:
    """PlanInputs with the hardware fields taken from a lora.profiles.HardwareProfile.

    Recipe fields (base_model, lora_r, micro_batch_size, sequence_len, ...) come in overrides; a
    TokenCount fills the dataset fields. Anything in overrides wins over the profile.
    """
    quant = overrides.get("quant_bits", 16 if profile.bf16 else 32)
    fields = dict(
        quant_bits=quant,
        accelerator=profile.accelerator,
        num_gpus=max(1, profile.num_gpus),
        gpu_memory_gb=profile.gpu_memory_gb,
        gpu_tflops=profile.gpu_bf16_tflops,
        usd_per_gpu_hour=profile.usd_per_gpu_hour,
        gradient_checkpointing=profile.gradient_checkpointing,
        sample_packing=profile.sample_packing,
        zero_stage=profile.default_zero_stage,
        attention="flash" if profile.flash_attention else ("sdpa" if profile.sdp_attention else "eager"),
        optimizer_8bit="8bit" in (profile.quantized_optimizer if quant in (4, 8) else profile.optimizer),
    )
    if tokens is not None:
        fields.update(
            dataset_rows=tokens.rows,
            dataset_tokens=tokens.tokens,
            max_row_tokens=tokens.max_row_tokens,
            token_method=tokens.method,
        )
        seq = overrides.get("sequence_len")
        mb = overrides.get("micro_batch_size")
        if seq and mb and not overrides.get("sample_packing", fields["sample_packing"]):
            fields["padding_factor"] = padding_factor(tokens.lengths, mb, seq)
    fields.update(overrides)
    return PlanInputs(**fields)


# ---- the estimate -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suggestion:
    change: str
    overrides: dict
    peak_gb_per_gpu: float


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    arch: ModelArch
    parts: dict[str, float]  # GiB per GPU at the training step
    setup_peak_gb: float  # GiB per GPU while weights are cast (allocated, as torch counts it)
    training_peak_gb: float
    peak_allocated_gb: float  # max of the two: comparable to torch.cuda.max_memory_allocated()
    peak_gb_per_gpu: float  # + CUDA context, allocator slack, NCCL: what the card must hold
    peak_phase: str  # "setup" or "training"
    fits: bool | None
    overflow: str | None
    suggestion: Suggestion | None
    trainable_params: int
    world_size: int
    samples_per_epoch: int
    steps: int
    tokens: int  # tokens the GPUs process, padding included
    flops: float
    seconds: float | None
    hours: float | None
    cost_usd: float | None
    assumptions: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def lora_trainable_params(inputs: PlanInputs, arch: ModelArch) -> int:
    shapes = arch.module_shapes()
    unknown = [m for m in inputs.modules() if m not in shapes]
    if unknown:
        raise ValueError(f"unknown target modules {unknown}; known: {', '.join(shapes)} or all-linear")
    per_layer = sum(inputs.lora_r * (shapes[m][0] + shapes[m][1]) for m in inputs.modules())
    if inputs.use_dora:
        per_layer += sum(shapes[m][1] for m in inputs.modules())  # DoRA's magnitude vector
    return per_layer * arch.num_hidden_layers


def _quantized_linear_bytes(inputs: PlanInputs, arch: ModelArch) -> float:
    n = arch.linear_params
    if inputs.quant_bits == 4:
        # NF4: 4 bits per weight + one absmax per 64-weight block. Double quantisation stores that absmax
        # as 8 bits plus one fp32 scale per 256 blocks: 0.5 + 1/64 + 4/(64*256) bytes per weight.
        return n * (0.5 + 1 / 64 + 4 / (64 * 256))
    if inputs.quant_bits == 8:
        # LLM.int8: 1 byte per weight + one fp32 scale per output row.
        out_rows = sum(o for _, o in arch.module_shapes().values()) * arch.num_hidden_layers
        return n + 4 * out_rows
    return n * (2 if inputs.quant_bits == 16 else 4)


def _memory(inputs: PlanInputs, arch: ModelArch) -> tuple[dict[str, float], float, list[str]]:
    """(training parts in GiB, setup peak in GiB, notes) per GPU."""
    notes: list[str] = []
    w = inputs.world_size
    z = inputs.zero_stage
    fp32 = inputs.quant_bits == 32
    half = 4 if fp32 else 2  # bytes of the compute dtype (bf16 on GPUs, fp32 on CPU)
    quantized = inputs.quant_bits in (4, 8)
    shard3 = w if z == 3 else 1  # ZeRO-3 partitions parameters (frozen base included) over all ranks

    linear_b = _quantized_linear_bytes(inputs, arch)
    unq = arch.unquantized_params  # embeddings, lm_head, norms: never quantised by bitsandbytes
    weights_linear = linear_b

    # Training-time storage of the non-quantised tensors. prepare_model_for_kbit_training alone leaves
    # them fp32 (FinLoRA without DeepSpeed); DeepSpeed's engine casts the module to 16-bit; axolotl casts
    # embeddings and norms back to the compute dtype itself.
    stays_fp32 = inputs.setup_upcast == "all_unquantized" and z is None
    unq_bytes_train = 4 if (stays_fp32 or fp32) else 2
    if inputs.setup_upcast == "all_unquantized" and not quantized and not fp32:
        # peft upcasts the 16-bit linears too (they are not int8/NF4)
        weights_linear = arch.linear_params * (4 if stays_fp32 else 2)
    base = (weights_linear + unq * unq_bytes_train) / shard3
    if z == 3:
        # the layer being computed is gathered in full, and the next one prefetched
        base += 2 * (arch.linear_params_per_layer * (linear_b / max(arch.linear_params, 1)))
        if inputs.quant_bits == 8:
            notes.append("ZeRO-3 cannot partition bitsandbytes int8 weights; use 4-bit (quant storage bf16) with ZeRO-3")

    # Setup transient: while tensors are cast one by one to fp32 (or back), the largest one exists in
    # both dtypes. Peak = weights with the upcast tensors at fp32 + one 16-bit copy of the largest.
    if inputs.setup_upcast == "none" or fp32:
        setup = base
    else:
        if inputs.setup_upcast == "all_unquantized":
            up_params = unq if quantized else arch.total_params
            rest = linear_b if quantized else 0
        else:  # axolotl: embed_tokens + lm_head (+ norms, negligible) to fp32
            emb = arch.embedding_params * (1 if arch.tie_word_embeddings else 2)
            up_params = emb
            rest = (linear_b if quantized else arch.linear_params * 2) + (unq - emb) * 2
        setup = (up_params * 4 + rest + arch.largest_unquantized_tensor * 2) / shard3

    # LoRA: fp32 adapter weights (peft upcasts adapters), fp32 grads, AdamW m+v (fp32 or 8-bit);
    # DeepSpeed keeps an fp32 master copy. ZeRO-1 shards optimizer state, 2 adds grads, 3 adds params.
    p = lora_trainable_params(inputs, arch)
    opt_bytes = 2 if inputs.optimizer_8bit else 8
    master = 4 if z is not None else 0
    lora_params = p * 4 / (w if z == 3 else 1)
    lora_grads = p * 4 / (w if (z or 0) >= 2 else 1)
    lora_opt = p * (opt_bytes + master) / (w if (z or 0) >= 1 else 1)
    lora = lora_params + lora_grads + lora_opt
    setup += p * 4 / (w if z == 3 else 1)

    # Activations for the longest micro batch: packed bins are sequence_len long; without packing the
    # batch is padded to its longest row.
    seq = inputs.sequence_len if inputs.sample_packing else min(inputs.sequence_len, inputs.max_row_tokens or inputs.sequence_len)
    if not inputs.sample_packing and not inputs.max_row_tokens:
        notes.append("longest row unknown: activations sized for full sequence_len rows")
    t = inputs.micro_batch_size * seq  # tokens in the micro batch
    h, i, q, kv = arch.hidden_size, arch.intermediate_size, arch.q_dim, arch.kv_dim
    # Elements saved for backward per token in one decoder layer: residual + norm outputs (4h), q/k/v
    # and their rotary copies, attention output, the SwiGLU's gate/up/act/product (4i).
    elems = 4 * h + 3 * q + 3 * kv + 4 * i
    layer_bytes = elems * half + 2 * 2 * h * 4  # + each RMSNorm keeps its fp32 upcast input and output
    if inputs.attention == "eager":
        layer_bytes += 2 * arch.num_attention_heads * seq * half  # scores + softmax, per token
    shapes = arch.module_shapes()
    for m in inputs.modules():
        if inputs.lora_dropout > 0:
            layer_bytes += shapes[m][0] * half  # dropout's copy of the module input
        layer_bytes += inputs.lora_r * 4
        if inputs.use_dora:
            layer_bytes += shapes[m][1] * half  # DoRA keeps the base output for the magnitude rescale
    # Two moments compete inside a step. At the loss: everything stored for backward + the logits buffer.
    # Later in backward the logits buffer is gone (only the 16-bit logits the output object holds remain)
    # but, with checkpointing, one layer is recomputed in full and its gradients are live. Summing both
    # would double count, so the step peak is the larger of the two.
    logits_at_loss = t * arch.vocab_size * (LOGITS_BYTES_FP32 if fp32 else LOGITS_BYTES_16BIT)
    logits_kept = t * arch.vocab_size * half
    final_norm = t * h * (half + 8)
    if inputs.gradient_checkpointing:
        stored = t * arch.num_hidden_layers * h * half  # each layer's input, kept for the recompute
        recompute = 2 * t * layer_bytes  # one layer's activations + their gradients
    else:
        stored = t * arch.num_hidden_layers * layer_bytes
        recompute = 0
    stored += final_norm
    if inputs.use_dora:
        # DoRA materialises W + BA of the module being computed (16-bit) to take its norm
        stored += max(a * b for a, b in (shapes[m] for m in inputs.modules())) * half
    if logits_at_loss >= recompute + logits_kept:
        act, logits = stored, logits_at_loss
    else:
        act, logits = stored + recompute, logits_kept

    parts = {
        "base_weights": base / GIB,
        "lora_params_grads_optimizer": lora / GIB,
        "activations": act / GIB,
        "logits": logits / GIB,
    }
    return parts, setup / GIB, notes


def _overhead_gib(inputs: PlanInputs, allocated_gib: float) -> float:
    if inputs.accelerator == "cpu":
        return CPU_RUNTIME_GIB
    extra = CUDA_CONTEXT_GIB + ALLOCATOR_SLACK * allocated_gib
    if inputs.world_size > 1:
        extra += NCCL_BUFFERS_GIB
    return extra


def _flops_per_token(inputs: PlanInputs, arch: ModelArch, ctx: float) -> float:
    """Training FLOPs per token for LoRA on a frozen base.

    The textbook 6N (2N forward + 4N backward) counts weight gradients, which a frozen base never
    computes: backward needs only input gradients (2N) plus the small LoRA weight gradients. So
    4N + 6*N_lora without checkpointing, and +2N for the recomputed forward with it (6N total, the
    textbook figure by coincidence). Attention's own FLOPs (QK^T, AV; causal halves them) scale with
    row length: QK^T and AV cost 4*q_dim*keys per token per layer and causal masking leaves ctx/2 keys
    on average, so forward 2*layers*q_dim*ctx per token, backward twice that.
    """
    n_mm = arch.linear_params + arch.embedding_params  # lm_head is a matmul even when tied; the lookup is not
    attn_fwd = 2 * arch.num_hidden_layers * arch.q_dim * ctx
    fwd = 2 * n_mm + attn_fwd
    bwd = 2 * n_mm + 2 * attn_fwd
    recompute = fwd if inputs.gradient_checkpointing else 0
    return fwd + bwd + recompute + 6 * lora_trainable_params(inputs, arch)


def _fits(inputs: PlanInputs, peak: float) -> bool | None:
    return None if inputs.gpu_memory_gb is None else peak <= inputs.gpu_memory_gb


def _core(inputs: PlanInputs, arch: ModelArch) -> dict:
    parts, setup, notes = _memory(inputs, arch)
    if inputs.accelerator == "cpu":
        # measured, not modelled: benchmarks/cpu_peak_memory.py on the bundled entries (docs/plan.md)
        notes.append("on CPU the measured peak RSS was 1.2-1.4x this estimate for 16-bit bases and 2.2-2.5x "
                     "for 4-bit (bitsandbytes' CPU path); keep that headroom")
    training = sum(parts.values())
    allocated = max(setup, training)
    overhead = _overhead_gib(inputs, allocated)
    parts = dict(parts, framework_overhead=overhead)
    return dict(
        parts=parts,
        setup=setup,
        training=training,
        allocated=allocated,
        peak=allocated + overhead,
        phase="setup" if setup > training else "training",
        notes=notes,
    )


def _suggest(inputs: PlanInputs, arch: ModelArch) -> Suggestion | None:
    """Cheapest change that fits, tried in order and confirmed by re-estimating each candidate:
    smaller micro batch (accumulation raised to keep the global batch), 4-bit, ZeRO-3, more machines."""
    if inputs.gpu_memory_gb is None:
        return None

    def fits(ov: dict) -> float | None:
        try:
            cand = inputs.model_copy(update=ov)
            cand = PlanInputs(**cand.model_dump())  # re-validate
        except Exception:
            return None
        peak = _core(cand, arch)["peak"]
        return peak if peak <= inputs.gpu_memory_gb else None

    candidates: list[tuple[str, dict]] = []
    mb, acc = inputs.micro_batch_size, inputs.gradient_accumulation_steps
    while mb > 1:
        mb = max(1, mb // 2)
        acc2 = math.ceil(inputs.micro_batch_size * acc / mb)
        candidates.append((f"micro_batch_size {mb} (gradient_accumulation_steps {acc2})",
                           {"micro_batch_size": mb, "gradient_accumulation_steps": acc2}))
    four = {"quant_bits": 4, "optimizer_8bit": True}
    if inputs.quant_bits in (8, 16) and inputs.accelerator == "cuda":
        candidates.append(("load the base in 4-bit (QLoRA, NF4 + double quant)", four))
    if inputs.zero_stage != 3 and inputs.world_size > 1:
        z3 = {"zero_stage": 3} | (four if inputs.quant_bits == 8 else {})
        candidates.append(("DeepSpeed ZeRO-3 (shards the base weights over the GPUs)", z3))
    for machines in (2, 3, 4, 6, 8, 12, 16):
        if machines <= inputs.num_machines:
            continue
        ov = {"num_machines": machines, "zero_stage": 3} | (four if inputs.quant_bits == 8 else {})
        candidates.append((f"{machines} machines x {inputs.num_gpus} GPUs with ZeRO-3", ov))
    # nothing single worked: everything at once, fewest machines first
    for machines in sorted({inputs.num_machines, 2, 4, 8, 16}):
        if machines < inputs.num_machines or inputs.num_gpus * machines < 2:
            continue
        ov = {"micro_batch_size": 1, "gradient_accumulation_steps": inputs.micro_batch_size * acc,
              "quant_bits": 4, "optimizer_8bit": True, "zero_stage": 3, "num_machines": machines}
        candidates.append((f"micro batch 1 + 4-bit + ZeRO-3 on {machines} machine(s) x {inputs.num_gpus} GPUs", ov))
    for change, ov in candidates:
        peak = fits(ov)
        if peak is not None:
            return Suggestion(change=change, overrides=ov, peak_gb_per_gpu=round(peak, 2))
    return None


def _steps_and_tokens(inputs: PlanInputs) -> tuple[int, int, int, list[str]]:
    """(samples per epoch, optimizer steps, tokens processed incl. padding, notes)."""
    notes: list[str] = []
    rows, tokens = inputs.dataset_rows, inputs.dataset_tokens
    if inputs.max_row_tokens and inputs.max_row_tokens > inputs.sequence_len:
        notes.append(f"some rows exceed sequence_len {inputs.sequence_len} (longest {inputs.max_row_tokens}); "
                     "axolotl drops or truncates them, the token count still includes them")
    if inputs.sample_packing:
        # packed samples are sequence_len bins filled to PACKING_EFFICIENCY; steps count bins, not rows
        samples = math.ceil(tokens / (inputs.sequence_len * PACKING_EFFICIENCY)) if tokens else 0
        pad = 1 / PACKING_EFFICIENCY  # the unfilled tail of each bin is still computed
        per_sample = inputs.sequence_len * PACKING_EFFICIENCY
    else:
        samples = rows
        pad = inputs.padding_factor or 1.0
        per_sample = tokens / rows if rows else 0
        if inputs.padding_factor is None:
            notes.append("padding not counted (no per-row lengths given): time is a lower bound without packing")
    global_batch = inputs.micro_batch_size * inputs.gradient_accumulation_steps * inputs.world_size
    if inputs.max_steps:  # as in HF's Trainer, max_steps overrides epochs
        steps = inputs.max_steps
        processed = steps * global_batch * per_sample * pad
    else:
        steps = math.ceil(samples * inputs.num_epochs / global_batch) if samples else 0
        processed = tokens * inputs.num_epochs * pad
    return samples, steps, int(round(processed)), notes


def estimate(inputs: PlanInputs, arch: ModelArch) -> Plan:
    core = _core(inputs, arch)
    samples, steps, tokens, step_notes = _steps_and_tokens(inputs)
    # attention cost follows the rows' own length: packed rows attend only within themselves (varlen)
    ctx = inputs.dataset_tokens / inputs.dataset_rows if inputs.dataset_rows else inputs.sequence_len
    flops = _flops_per_token(inputs, arch, min(ctx, inputs.sequence_len)) * tokens
    seconds = hours = cost = None
    if inputs.gpu_tflops:
        seconds = flops / (inputs.world_size * inputs.gpu_tflops * 1e12 * inputs.utilisation)
        if inputs.use_dora:
            seconds *= DORA_TIME_FACTOR
        hours = seconds / 3600
        if inputs.usd_per_gpu_hour is not None:
            cost = hours * inputs.world_size * inputs.usd_per_gpu_hour
    fits = _fits(inputs, core["peak"])
    overflow = suggestion = None
    if fits is False:
        parts = {k: v for k, v in core["parts"].items() if k != "framework_overhead"}
        if core["phase"] == "setup":
            largest = "setup transient (weights being cast to fp32 while the model is prepared)"
        else:
            largest = max(parts, key=parts.get)
        overflow = (f"needs {core['peak']:.2f} GB per GPU of {inputs.gpu_memory_gb:g} GB "
                    f"({core['peak'] - inputs.gpu_memory_gb:.2f} GB over); largest part: {largest}")
        suggestion = _suggest(inputs, arch)
    assumptions = {
        "utilisation": inputs.utilisation,
        "tokens": inputs.token_method,
        "padding_factor": round(inputs.padding_factor, 3) if inputs.padding_factor else None,
        "packing_efficiency": PACKING_EFFICIENCY if inputs.sample_packing else None,
        "flops_per_token": "fwd 2N + bwd 2N (frozen base: input grads only) + recompute 2N if checkpointing + attention",
        "cuda_context_gb": CUDA_CONTEXT_GIB if inputs.accelerator == "cuda" else None,
        "allocator_slack": ALLOCATOR_SLACK if inputs.accelerator == "cuda" else None,
        "setup_upcast": inputs.setup_upcast,
        "dora_time_factor": round(DORA_TIME_FACTOR, 3) if inputs.use_dora else None,
        "arch_source": arch.source,
        "gb": "GiB (2**30 bytes)",
    }
    return Plan(
        inputs=inputs,
        arch=arch,
        parts={k: round(v, 3) for k, v in core["parts"].items()},
        setup_peak_gb=round(core["setup"], 3),
        training_peak_gb=round(core["training"], 3),
        peak_allocated_gb=round(core["allocated"], 3),
        peak_gb_per_gpu=round(core["peak"], 2),
        peak_phase=core["phase"],
        fits=fits,
        overflow=overflow,
        suggestion=suggestion,
        trainable_params=lora_trainable_params(inputs, arch),
        world_size=inputs.world_size,
        samples_per_epoch=samples,
        steps=steps,
        tokens=tokens,
        flops=flops,
        seconds=seconds,
        hours=None if hours is None else round(hours, 3),
        cost_usd=None if cost is None else round(cost, 2),
        assumptions={k: v for k, v in assumptions.items() if v is not None},
        notes=tuple(core["notes"] + step_notes),
    )


def checkpoint_interval_steps(plan: Plan, minutes: float = 30) -> int:
    """Steps that take about `minutes` on this plan's hardware: the launcher's save_steps, so a lost pod
    costs at most one interval. Without a time estimate (no TFLOPS figure, e.g. CPU) it falls back to
    ten saves per run."""
    if plan.steps <= 0:
        return 1
    if not plan.seconds:
        return max(1, math.ceil(plan.steps / 10))
    per_step = plan.seconds / plan.steps
    return max(1, min(plan.steps, int(minutes * 60 // per_step)))


# ---- output -------------------------------------------------------------------------------------
_PART_LABELS = {
    "base_weights": "base weights",
    "lora_params_grads_optimizer": "LoRA params + grads + optimizer",
    "activations": "activations",
    "logits": "logits buffer",
    "framework_overhead": "framework/CUDA overhead",
}


def plan_to_json(plan: Plan) -> dict:
    s = plan.suggestion
    return {
        "base_model": plan.inputs.base_model,
        "peak_gb_per_gpu": plan.peak_gb_per_gpu,
        "peak_allocated_gb": plan.peak_allocated_gb,
        "peak_phase": plan.peak_phase,
        "setup_peak_gb": plan.setup_peak_gb,
        "gpu_memory_gb": plan.inputs.gpu_memory_gb,
        "fits": plan.fits,
        "overflow": plan.overflow,
        "suggestion": None if s is None else {"change": s.change, "overrides": s.overrides,
                                              "peak_gb_per_gpu": s.peak_gb_per_gpu},
        "parts": plan.parts,
        "trainable_params": plan.trainable_params,
        "world_size": plan.world_size,
        "samples_per_epoch": plan.samples_per_epoch,
        "steps": plan.steps,
        "tokens": plan.tokens,
        "flops": plan.flops,
        "hours": plan.hours,
        "cost_usd": plan.cost_usd,
        "checkpoint_every_steps": checkpoint_interval_steps(plan),
        "assumptions": plan.assumptions,
        "notes": list(plan.notes),
    }


def format_plan(plan: Plan) -> str:
    i = plan.inputs
    quant = {4: "4-bit NF4", 8: "8-bit int8", 16: "bf16", 32: "fp32"}[i.quant_bits]
    zero = "no DeepSpeed" if i.zero_stage is None else f"ZeRO-{i.zero_stage}"
    lines = [
        f"plan: {i.base_model} ({plan.arch.total_params / 1e9:.2f}B params, {quant}), "
        f"LoRA r={i.lora_r}{' DoRA' if i.use_dora else ''} on {','.join(i.modules())}",
        f"  hardware: {i.num_machines} machine(s) x {i.num_gpus} "
        f"{'GPU' if i.accelerator == 'cuda' else 'CPU process(es)'}"
        f"{'' if i.gpu_memory_gb is None else f' {i.gpu_memory_gb:g} GB'}, {zero}, "
        f"micro batch {i.micro_batch_size} x accum {i.gradient_accumulation_steps}, seq {i.sequence_len}"
        f"{', packed' if i.sample_packing else ''}{', grad ckpt' if i.gradient_checkpointing else ''}",
        f"  memory per {'GPU' if i.accelerator == 'cuda' else 'process (RAM)'} (GB = GiB)",
    ]
    for k, v in plan.parts.items():
        lines.append(f"    {_PART_LABELS.get(k, k):<34} {v:8.2f}")
    lines.append(f"    {'setup transient (casting weights)':<34} {plan.setup_peak_gb:8.2f}")
    cap = "" if i.gpu_memory_gb is None else f" of {i.gpu_memory_gb:g}"
    lines.append(f"    {'peak':<34} {plan.peak_gb_per_gpu:8.2f}{cap}  (at {plan.peak_phase})")
    if plan.fits is True:
        lines.append("  fits: yes")
    elif plan.fits is False:
        lines.append(f"  DOES NOT FIT: {plan.overflow}")
        if plan.suggestion:
            lines.append(f"  cheapest change that fits: {plan.suggestion.change} "
                         f"-> {plan.suggestion.peak_gb_per_gpu:.2f} GB per GPU")
        else:
            lines.append("  no single change tried (micro batch, 4-bit, ZeRO-3, more machines) makes it fit")
    else:
        lines.append("  fits: unknown (no GPU memory figure for this profile)")
    lines.append(f"  data: {i.dataset_rows} rows, {i.dataset_tokens} tokens ({i.token_method})")
    lines.append(f"  steps: {plan.steps} ({plan.samples_per_epoch} samples/epoch x {i.num_epochs:g} epochs / "
                 f"{i.micro_batch_size * i.gradient_accumulation_steps * plan.world_size} per step"
                 f"{'' if not i.max_steps else ', max_steps'}), {plan.tokens} tokens processed")
    if plan.hours is not None:
        lines.append(f"  time: {plan.hours:.2f} h at {i.utilisation:.0%} of {i.gpu_tflops:g} TFLOPS per GPU "
                     f"({plan.flops:.3g} FLOPs); checkpoint every {checkpoint_interval_steps(plan)} steps (~30 min)")
    else:
        lines.append(f"  time: not estimated (no TFLOPS figure for this hardware); {plan.flops:.3g} FLOPs")
    if plan.cost_usd is not None:
        lines.append(f"  cost: ${plan.cost_usd:.2f} ({plan.world_size} GPUs x {plan.hours:.2f} h "
                     f"x ${i.usd_per_gpu_hour:g}/GPU-hour)")
    for n in plan.notes:
        lines.append(f"  note: {n}")
    lines.append(f"  facts: {plan.arch.source}")
    return "\n".join(lines)
