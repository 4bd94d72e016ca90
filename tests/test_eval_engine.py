"""eval/engine.py: adapters attach only when every weight lands in an injected module (fast, a tiny random
Llama built here), and generation does not depend on batching (slow, the bundled model).

    .venv/bin/python -m pytest tests/test_eval_engine.py -q
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from eval.engine import AdapterHost, AdapterMismatch, Loaded, load_base  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-layer random Llama (saved, so it loads like any base) and a q/v LoRA adapter for it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(root / "base"),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(root / "good")
    return root


def _host(tiny) -> AdapterHost:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny / "base").eval()
    return AdapterHost(Loaded(model, None, torch.device("cpu"), "float32", 0.0))


def test_matching_adapter_attaches_twice(tiny):
    host = _host(tiny)
    host.attach("one", str(tiny / "good"))
    host.attach("two", str(tiny / "good"))  # the second attach goes through load_adapter
    host.detach("one")
    host.detach("two")


@pytest.mark.parametrize("targets,needle", [
    (["k_proj", "o_proj"], "match no injected module"),  # config edited after training: nothing would load
    (["q_proj", "v_proj", "k_proj"], "not in the file"),  # k_proj injected but never loaded (B = 0)
])
@pytest.mark.parametrize("first", [True, False])
def test_weights_that_miss_the_injected_modules_are_refused(tiny, tmp_path, targets, needle, first):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny / "good", bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "target_modules": targets}))
    host = _host(tiny)
    if not first:
        host.attach("good", str(tiny / "good"))
    with pytest.raises(AdapterMismatch, match=needle):
        host.attach("bad", str(bad))
    # nothing of the refused adapter stays behind to leak into the next row
    model = host.peft_model if host.peft_model is not None else host.loaded.model
    assert "bad" not in getattr(model, "peft_config", {})
    assert all("bad" not in m.lora_A for m in model.modules() if hasattr(m, "lora_A"))


@pytest.mark.slow
def test_generation_does_not_depend_on_batching():
    from eval.engine import generate
    from lora.base_model import ensure_base_model
    from lora.prompts import PROMPT_FORMATS, apply

    loaded = load_base(str(ensure_base_model(quiet=True)))
    with open("data/test/fpb_test.jsonl", encoding="utf-8") as f:
        prompts = [apply(PROMPT_FORMATS["chatml"], json.loads(next(f))["context"]) for _ in range(3)]
    one, _ = generate(loaded.model, loaded.tokenizer, prompts, 6, True, batch_size=1)
    three, stats = generate(loaded.model, loaded.tokenizer, prompts, 6, True, batch_size=3)
    assert one == three
    assert all("\n" not in o.strip() for o in three)  # stopped at the newline after the answer


# ---------------------------------------------------------------- --precision (eval_precision is pure)


def test_eval_precision_on_the_cpu_follows_the_capability():
    from eval.engine import eval_precision
    from lora.precision import CpuFacts

    has, lacks = CpuFacts(True, "faked"), CpuFacts(False, "faked")
    auto = eval_precision("auto", None, None, has)
    assert auto.dtype == torch.bfloat16 and auto.record["used"] == "bf16" and auto.fingerprint == "bf16"
    fp32 = eval_precision("auto", None, None, lacks)
    # fp32 on the CPU is what eval always loaded: no fingerprint key, so finished pairs stay finished
    assert fp32.dtype == torch.float32 and fp32.fingerprint is None
    assert eval_precision("fp32", None, None, has).dtype == torch.float32


def test_eval_precision_on_cuda_and_with_a_quantised_base():
    from eval.engine import eval_precision
    from lora.errors import UserError

    auto = eval_precision("auto", None, True, None)
    assert auto.dtype is None and auto.fingerprint is None  # the checkpoint's dtype, as before
    assert eval_precision("fp32", None, True, None).fingerprint == "cuda-fp32"
    with pytest.raises(UserError, match="does not support bf16"):
        eval_precision("bf16", None, False, None)
    quant = eval_precision("auto", 4, None, None)
    assert quant.dtype is None and quant.record["used"] == "4bit"
    with pytest.raises(UserError, match="--base-quant 4 sets the dtype"):
        eval_precision("bf16", 4, None, None)
