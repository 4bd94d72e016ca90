"""The registry: finetune_configs.json, a map of run name -> entry, validated by one pydantic model.

    python finetune.py --list                          # every entry, validated
    python finetune.py --config-json other.json --list # another registry (FinLoRA's files work unchanged)

Entries are drop-in compatible with FinLoRA's (base_model, dataset_path, lora_r, quant_bits,
learning_rate, num_epochs, batch_size, gradient_accumulation_steps, peft_use_dora, peft_use_rslora,
lora_alpha); the other keys are optional, and an entry without `defaults` trains what FinLoRA's
generator trains (lora/recipe/defaults.py; `Entry.resolved` is the one place effective values are decided).
Every problem is reported as one line that names the entry, the key and the fix (close matches for
typos), and the CLI exits 2 before anything is written.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lora.core.errors import UserError, did_you_mean
from lora.core.files import read_json, stat_kind, unique_keys, user_path, user_path_in
from lora.core.jsonl import is_text
from lora.core.names import check_name
from lora.core.prompts import PROMPT_FORMATS
from lora.recipe.defaults import DEFAULTS_SETS, Resolved, resolve
from lora.recipe.profiles import ATTENTION_BACKENDS, PROFILES

# The modules "all-linear" means for the Llama-style models in the catalogue (axolotl's
# lora_target_linear picks every Linear but lm_head; listed here for the planner and --list).
ALL_LINEAR = "all-linear"
# Optimizers a recipe may name: FinLoRA's three, our profiles' choices, and the fp32-state paged one.
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
FINLORA_KEYS = ("base_model", "dataset_path", "lora_r", "quant_bits", "learning_rate", "num_epochs", "batch_size",
                "gradient_accumulation_steps", "peft_use_dora", "peft_use_rslora", "lora_alpha")
# The hub's own rule for repo ids (huggingface_hub.utils.validate_repo_id), ASCII only.
_HUB_ID = re.compile(r"(?=.{1,96}$)(?:[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?", re.ASCII)


class ExtraDataset(BaseModel):
    """Another JSONL mixed into the training set; weight 0.5 takes half its rows, 2 takes it twice."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str
    weight: float = Field(default=1.0, ge=0.01, le=100)

    @field_validator("weight")
    @classmethod
    def _whole_percent(cls, v: float) -> float:
        if abs(v * 100 - round(v * 100)) > 1e-9:
            raise ValueError("weights are taken in steps of 0.01 (whole percent of the file)")
        return v


class Entry(BaseModel):
    # Infinity/NaN are valid JSON to Python's parser; no key of ours means anything with them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # FinLoRA's keys (FINLORA_KEYS). Each description is the docs/registry.md table (lora/recipe/registry_doc.py).
    base_model: str = Field(min_length=1, description=(
        "hub id, or a local folder written `./…`, `../…`, `/…` (relative to the registry file)"))
    dataset_path: str = Field(min_length=1, description=(
        'JSONL of `{"context","target"}` rows; relative to the registry file\'s folder'))
    lora_r: int = Field(ge=1, le=1024, description="LoRA rank")
    quant_bits: Literal[4, 8, 16] = Field(default=16, description=(  # FinLoRA: absent means 16-bit
        "base weights: 4 = bitsandbytes 4-bit (finlora: FP4 as FinLoRA's cards trained; tuned: NF4 + double "
        "quant), 8 = bitsandbytes int8, 16 = unquantised"))
    learning_rate: float = Field(gt=0, lt=1, description="peak learning rate")
    num_epochs: float = Field(default=1, gt=0, le=1000, description="passes over the data")
    batch_size: int = Field(default=1, ge=1, le=4096, description="axolotl's `micro_batch_size` (per device)")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=65536, description="micro-batches per optimizer step")
    peft_use_dora: bool = Field(default=False, description="DoRA")
    peft_use_rslora: bool = Field(default=False, description="rank-stabilised scaling")
    lora_alpha: int = Field(default=16, ge=1, le=65536, description="LoRA scaling numerator")

    # Our additions (all optional). `null` = from the entry's defaults set (lora/recipe/defaults.py resolves it).
    defaults: str = Field(default="finlora", description=(
        "`finlora`: FinLoRA's generator and published cards (q/k/v, val 0.02, warmup_steps 10, no packing, "
        "`[INST]` prompt, ZeRO-1, its optimizers and 4-bit quantisation); `tuned`: ours (all-linear, the "
        "profile's packing and ZeRO, warmup_ratio 0.03); a key set here beats either"))
    description: str | None = Field(default=None, max_length=2000, description="shown in the recipe header")
    lora_dropout: float | None = Field(default=None, ge=0, lt=1, description=(
        "dropout on the LoRA path; null: 0.05 (both sets)"))
    target_modules: list[str] | Literal["all-linear"] | None = Field(default=None, description=(
        'a list such as `["q_proj","k_proj","v_proj"]` or `"all-linear"`; null: q/k/v (finlora), '
        "all-linear (tuned); a name the model lacks is refused before launch"))
    sequence_len: int | None = Field(default=None, ge=32, le=131072, description=(
        "tokens per sequence; null: 4096 (both sets)"))
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000, description=(
        "stop after this many optimizer steps (checkpoints every quarter of them)"))
    val_set_size: float | None = Field(default=None, ge=0, le=10_000_000, description=(
        "< 1: fraction of rows held out; ≥ 1: a row count; adds eval loss to loss.png; "
        "null: 0.02 (finlora), 0 (tuned)"))
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="numpy's seed range, which the trainer seeds")
    sample_packing: bool | None = Field(default=None, description=(
        "null: off (finlora), the profile's choice (tuned); packed micro-batches count sequences, not rows"))
    profile: str = Field(default="a5000x4", description=(
        "hardware profile: " + ", ".join(f"`{p}`" for p in PROFILES) + " (`lora/recipe/profiles.py`)"))
    zero_stage: Literal[1, 2, 3] | None = Field(default=None, description=(
        "DeepSpeed ZeRO 1/2/3; null: 1 (finlora), the profile's (tuned; 2 on `a5000x4`); `--zero` overrides"))
    prompt_format: str | None = Field(default=None, description=(
        ", ".join(f"`{p}`" for p in PROMPT_FORMATS) + " (`lora/core/prompts.py`); null: `finlora_inst` (both sets); "
        "recorded in run.json so evaluation uses the same prompt"))
    extra_datasets: list[ExtraDataset] = Field(default_factory=list, description=(
        '`[{"path": …, "weight": 0.5}]`: weight 2 = the file twice, 0.25 = its first quarter'))
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] | None = Field(
        default=None, description="learning-rate schedule; null: cosine (both sets)")
    warmup_steps: int | None = Field(default=None, ge=0, le=1_000_000, description=(
        "optimizer steps spent warming up; null: 10 (finlora) unless `warmup_ratio` is set"))
    warmup_ratio: float | None = Field(default=None, ge=0, le=0.5, description=(
        "share of steps spent warming up; null: 0.03 (tuned) unless `warmup_steps` is set"))
    optimizer: str | None = Field(default=None, description=(
        ", ".join(f"`{o}`" for o in OPTIMIZERS) + "; null: adamw_bnb_8bit (8-bit), paged_adamw_8bit (4-bit), "
        "adamw_torch_fused (16-bit) for finlora, the profile's for tuned"))
    attention: Literal[ATTENTION_BACKENDS] | None = Field(default=None, description=(
        "`sdpa` (PyTorch's, no extra package), `flash_attention_2` (needs the flash-attn wheel, docs/pods.md), "
        "`eager`; null: the profile's (`sdpa`), upgraded at launch to flash-attn on a GPU when it imports"))
    trackers: list[Literal["wandb", "mlflow"]] = Field(default_factory=list, description=(
        "besides TensorBoard (always): `wandb` and/or `mlflow`; also switched on by WANDB_PROJECT / "
        "MLFLOW_TRACKING_URI in the environment (keys and tokens stay in the environment, docs/pods.md)"))
    logging_steps: int = Field(default=10, ge=1, le=1_000_000, description="steps between loss log lines")
    trust_remote_code: bool = Field(default=False, description="only when an entry asks for it")

    @field_validator("defaults")
    @classmethod
    def _known_defaults(cls, v: str) -> str:
        if v not in DEFAULTS_SETS:
            raise ValueError(f"unknown defaults set {v!r}; known: {', '.join(DEFAULTS_SETS)}"
                             f"{did_you_mean(v, DEFAULTS_SETS)}")
        return v

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str | None) -> str | None:
        if v is not None and v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; known: {', '.join(OPTIMIZERS)}{did_you_mean(v, OPTIMIZERS)}")
        return v

    @field_validator("base_model")
    @classmethod
    def _model_ref(cls, v: str) -> str:
        if not is_local_model_ref(v) and (not _HUB_ID.fullmatch(v) or ".." in v or "--" in v):
            raise ValueError("give a local model folder (./…, ../…, /…, ~…) or a hub id such as "
                             "meta-llama/Llama-3.1-8B-Instruct (letters, digits, '-', '_', '.'; at most 96 characters)")
        return v

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r}; known: {', '.join(PROFILES)}{did_you_mean(v, PROFILES)}")
        return v

    @field_validator("prompt_format")
    @classmethod
    def _known_prompt_format(cls, v: str | None) -> str | None:
        if v is not None and v not in PROMPT_FORMATS:
            raise ValueError(
                f"unknown prompt format {v!r}; known: {', '.join(PROMPT_FORMATS)}{did_you_mean(v, PROMPT_FORMATS)}"
            )
        return v

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError('empty list; give module names such as ["q_proj", "v_proj"] or "all-linear"')
            bad = [m for m in v if not re.fullmatch(r"[A-Za-z_][\w.]*", m)]
            if bad:
                raise ValueError(f"not module names: {bad}")
        return v

    @field_validator("val_set_size")
    @classmethod
    def _val_size(cls, v: float | None) -> float | None:
        if v is not None and v >= 1 and v != int(v):
            raise ValueError("a row count must be whole; use a fraction below 1 or an integer")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> "Entry":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError(
                f"warmup_steps and warmup_ratio: give one, not both (got {self.warmup_steps} steps and ratio "
                f"{self.warmup_ratio}); FinLoRA's cards use warmup_steps 10"
            )
        profile = PROFILES[self.profile]
        stage = self.resolved.zero_stage
        if stage is not None and profile.accelerator == "cpu" and self.quant_bits != 16:
            # ZeRO on CPU processes is measured for 16-bit bases only (docs/distributed.md)
            raise ValueError(
                f"zero_stage: DeepSpeed ZeRO-{stage} on the cpu profile runs 16-bit bases only; "
                f"set quant_bits 16 or remove zero_stage"
            )
        if self.quant_bits == 8 and stage == 3:
            raise ValueError(
                "zero_stage: ZeRO-3 cannot partition bitsandbytes 8-bit weights; "
                "use zero_stage 2 or quant_bits 4 (4-bit + ZeRO-3 is supported)"
            )
        if self.peft_use_dora and self.quant_bits == 8 and profile.accelerator == "cpu":
            raise ValueError(
                "peft_use_dora: DoRA on an 8-bit base fails on CPU from the second step (bitsandbytes 0.50.2's "
                "CPU int8 matmul loses its column statistics; measured); use quant_bits 4 or 16 on the cpu profile"
            )
        if self.peft_use_dora and stage == 3:
            raise ValueError(
                "zero_stage: DoRA's magnitude vectors need the full weights, which ZeRO-3 shards; "
                "use zero_stage 2 or drop peft_use_dora"
            )
        return self

    @property
    def resolved(self) -> Resolved:
        """The effective values (explicit keys, the defaults set, the profile's limits): lora/recipe/defaults.py."""
        return resolve(self)

    @property
    def variant(self) -> str:
        return variant_name(self.quant_bits, self.lora_r, self.peft_use_dora, self.peft_use_rslora)


def variant_name(quant_bits: int, lora_r: int, dora: bool, rslora: bool) -> str:
    """FinLoRA's adapter-folder naming: 8bits_r8, 4bits_r4, 8bits_r8_dora, fp16_r8 … (DoRA wins over rsLoRA)."""
    bits = "fp16" if quant_bits == 16 else f"{quant_bits}bits"
    suffix = "_dora" if dora else "_rslora" if rslora else ""
    return f"{bits}_r{lora_r}{suffix}"


class Registry(BaseModel):
    """A loaded registry: where it came from and its validated entries (insertion order kept)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    entries: dict[str, Entry]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def get(self, name: str) -> Entry:
        check_name(name, "run name")
        if name not in self.entries:
            raise UserError(
                f"unknown run {name!r}{did_you_mean(name, self.entries)}; "
                f"`python finetune.py --list` shows the {len(self.entries)} runs in {self.path.name}"
            )
        return self.entries[name]

    def resolve_path(self, path: str) -> Path:
        """Relative dataset paths are relative to the registry file's folder (as in FinLoRA)."""
        return user_path_in(path, self.folder, "path")

    def resolve_base_model(self, entry: Entry) -> str:
        """A local folder (./…, ../…, /…, ~…) resolves like a dataset path; anything else is a hub id."""
        if is_local_model_ref(entry.base_model):
            return str(self.resolve_path(entry.base_model))
        return entry.base_model


def is_local_model_ref(base_model: str) -> bool:
    return base_model.startswith(("./", "../", "/", "~"))



def _describe_error(name: str, err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    key = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "extra_forbidden":
        return f"entry {name!r}: unknown key {loc!r}{did_you_mean(key, Entry.model_fields)}"
    if err["type"] == "missing":
        return f"entry {name!r}: missing required key {loc!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a cross-field rule: its message starts with the key it is about
        return f"entry {name!r}: {msg}"
    got = err.get("input")
    shown = f" (got {json.dumps(got)})" if not isinstance(got, (dict, list)) else ""
    return f"entry {name!r}: key {loc!r}: {msg}{shown}"


def _first_error(errors: list[dict]) -> dict:
    """An unknown key first: `lora_rr` is a typo of `lora_r`, and 'missing lora_r' would hide what happened."""
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [s for item in items for s in _strings(item)]


def _lone_surrogate_key(raw: dict) -> str | None:
    """The first key whose value holds (at any depth) a lone surrogate escape such as "\\ud800"."""
    return next((key for key, value in raw.items() if not all(map(is_text, _strings(value)))), None)


def parse_entry(name: str, raw) -> Entry:
    check_name(name, "run name")
    if not isinstance(raw, dict):
        raise UserError(f"entry {name!r}: must be a JSON object of keys, got {type(raw).__name__}")
    bad = _lone_surrogate_key(raw)
    if bad is not None:
        raise UserError(f"entry {name!r}: key {bad!r} holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
    try:
        return Entry.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_describe_error(name, _first_error(exc.errors()))) from None


def load_registry(path: Path | str) -> Registry:
    path = user_path(path, "registry")
    if stat_kind(path, "registry") == "missing":
        raise UserError(f"registry {path} does not exist; pass --config-json PATH")
    raw = read_json(path, "registry", object_pairs_hook=unique_keys("registry"))
    if not isinstance(raw, dict):
        raise UserError(f"{path}: must be a JSON object mapping run names to entries")
    entries = {name: parse_entry(name, value) for name, value in raw.items()}
    return Registry(path=path.resolve(), entries=entries)
