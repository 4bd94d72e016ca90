"""Architecture facts: a HF config.json (local folder) or the shipped table -> ModelArch. Never guessed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError, one_line

FACTS_PATH = Path(__file__).resolve().parent / "model_facts.json"


class MissingFacts(LookupError):
    """The architecture facts needed for a plan are not available locally. Never guessed. One line."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


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

    def check_modules(self, modules: tuple[str, ...] | list[str], base_model: str) -> None:
        """UserError (one line) naming the modules the model lacks and the linear modules it has."""
        shapes = self.module_shapes()
        unknown = [m for m in modules if m not in shapes]
        if unknown:
            raise UserError(f"target_modules: {base_model} has no linear module {', '.join(unknown)}; "
                            f"its linear modules are {', '.join(shapes)} (or all-linear)")

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
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_OPTIONAL = ("num_key_value_heads", "head_dim", "total_params")  # HF defaults them when absent (or null)
_MAX_FACT = 2**50  # no real dimension or parameter count comes near; keeps every product a finite float


def _fact_ok(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_FACT


def _merged_config(config, source: str) -> dict:
    """The config with a multimodal model's text_config folded in (top-level keys win)."""
    text = config.get("text_config") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(text or {}, dict):
        raise MissingFacts(f"{source} is not a config object (expected {{\"hidden_size\": ..., ...}})")
    return dict(text or {}, **{k: v for k, v in config.items() if k != "text_config"})


def arch_from_config(config: dict, source: str = "config.json") -> ModelArch:
    """ModelArch from a HF config.json dict (or a model_facts.json entry). Raises MissingFacts."""
    cfg = _merged_config(config, source)
    missing = [k for k in _REQUIRED if not _fact_ok(cfg.get(k))]
    if missing:
        raise MissingFacts(f"{source} lacks {', '.join(missing)} as positive integers "
                           f"(needed: {', '.join(_REQUIRED)})")
    bad = [k for k in _OPTIONAL if cfg.get(k) is not None and not _fact_ok(cfg.get(k))]
    if bad:
        raise MissingFacts(f"{source}: {', '.join(f'{k} {cfg[k]!r}' for k in bad)} is not a positive integer")
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


def local_model_folder(base_model: str, repo_root: Path) -> Path:
    """A recipe's base_model as a folder: absolute, or relative to the repo root as recipes write it."""
    try:
        local = Path(base_model).expanduser()
    except RuntimeError:  # "~someone/..." naming no user: taken literally
        local = Path(base_model)
    return local if local.is_absolute() else Path(repo_root) / local


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name no file system takes (too long): not a local folder
        return False


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MissingFacts(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None


def _table_key(base_model: str, models: dict, aliases: dict) -> str:
    key = aliases.get(base_model, base_model)
    if key not in models:  # hub ids are case-insensitive
        lowered = {k.lower(): k for k in models} | {k.lower(): v for k, v in aliases.items()}
        key = lowered.get(base_model.lower(), key)
    return key


def load_arch(base_model: str, repo_root: Path, facts_path: Path = FACTS_PATH) -> ModelArch:
    """Facts from <base_model>/config.json when it is a local folder, else from the shipped table."""
    looked: list[str] = []
    config_file = local_model_folder(base_model, repo_root) / "config.json"
    if _is_file(config_file):
        return arch_from_config(_read_config(config_file), source=str(config_file))
    looked.append(f"no config.json at {config_file}")
    table = load_facts_table(facts_path)
    models, aliases = table.get("models", {}), table.get("aliases", {})
    key = _table_key(base_model, models, aliases)
    if key in models:
        entry = models[key]
        return arch_from_config(entry, source=f"{facts_path.name}: {key} ({entry.get('source', 'no source')})")
    looked.append(f"not in {facts_path} (known: {', '.join(sorted(models))})")
    raise MissingFacts(
        f"cannot plan for {base_model!r}: missing hidden_size, intermediate_size, num_hidden_layers, "
        f"num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings; looked: "
        + "; ".join(looked)
        + ". Put the model folder (with config.json) on disk or add it to lora/estimate/model_facts.json."
    )
