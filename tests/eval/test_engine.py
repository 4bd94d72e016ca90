"""eval/engine.py: adapters attach only when every weight lands in an injected module (fast, a tiny random
Llama built here), and generation does not depend on batching (slow, the bundled model).

    .venv/bin/python -m pytest tests/eval/test_engine.py -q
"""
from __future__ import annotations

import contextlib
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
    from eval.generation import generate
    from lora.core.base_model import ensure_base_model
    from lora.core.prompts import PROMPT_FORMATS, apply

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
    from lora.core.precision import CpuFacts

    has, lacks = CpuFacts(True, "faked"), CpuFacts(False, "faked")
    auto = eval_precision("auto", None, None, has)
    assert auto.dtype == torch.bfloat16 and auto.record["used"] == "bf16" and auto.fingerprint == "bf16"
    fp32 = eval_precision("auto", None, None, lacks)
    # fp32 on the CPU is what eval always loaded: no fingerprint key, so finished pairs stay finished
    assert fp32.dtype == torch.float32 and fp32.fingerprint is None
    assert eval_precision("fp32", None, None, has).dtype == torch.float32


def test_eval_precision_on_cuda_and_with_a_quantised_base():
    from eval.engine import eval_precision
    from lora.core.errors import UserError

    auto = eval_precision("auto", None, True, None)
    assert auto.dtype is None and auto.fingerprint is None  # the checkpoint's dtype, as before
    assert eval_precision("fp32", None, True, None).fingerprint == "cuda-fp32"
    with pytest.raises(UserError, match="does not support bf16"):
        eval_precision("bf16", None, False, None)
    quant = eval_precision("auto", 4, None, None)
    assert quant.dtype is None and quant.record["used"] == "4bit"
    with pytest.raises(UserError, match="--base-quant 4 sets the dtype"):
        eval_precision("bf16", 4, None, None)


# ---------------------------------------------------------------- --merge-lora (merge_choice is pure)


@pytest.mark.parametrize("requested,dtype,cuda,blocker,copy,free,merged,needle", [
    ("auto", "bfloat16", False, None, 10, 100, True, "bfloat16 base on the CPU"),
    ("auto", "float32", False, None, 10, 100, False, "float32 base runs unmerged"),
    ("auto", "bfloat16", True, None, 10, 100, False, "on CUDA"),
    ("auto", "bfloat16", False, "DoRA or another LoRA variant", 10, 100, False, "DoRA"),
    ("auto", "bfloat16", False, None, 60, 100, False, "over half the free memory"),
    ("auto", "bfloat16", False, None, 60, None, True, "CPU"),  # free memory unknown: decided without it
    ("on", "float32", True, None, 10, 100, True, "--merge-lora on"),
    ("on", "float32", False, "lora_bias", 10, 100, False, "lora_bias: runs unmerged"),
    ("off", "bfloat16", False, None, 10, 100, False, "--merge-lora off"),
])
def test_merge_choice(requested, dtype, cuda, blocker, copy, free, merged, needle):
    from eval.merged_lora import merge_choice

    choice = merge_choice(requested, dtype, cuda, blocker, copy, free)
    assert choice.merge is merged and needle in choice.why
    assert choice.record() == {"merged": merged, "why": choice.why}


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_merged_weights_compute_the_adapter_and_leave_the_base_untouched(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from eval.merged_lora import merge_blocker, merged_copy_bytes, merged_into_base

    # an all-linear adapter with non-zero B (a fresh one is the identity, which would prove nothing)
    torch.manual_seed(1)
    trained = get_peft_model(LlamaForCausalLM.from_pretrained(tiny / "base"),
                             LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    for n, p in trained.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    trained.save_pretrained(tmp_path / "a")
    host = _host(tiny)
    host.attach("a", str(tmp_path / "a"))
    pm = host.peft_model
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    unmerged = _logits(pm, ids)
    with pm.disable_adapter():
        base = _logits(pm, ids)
    before = {k: v.clone() for k, v in pm.state_dict().items()}
    assert merge_blocker(pm, "a") is None
    assert merged_copy_bytes(pm, "a") == 4 * sum(m.weight.numel() for n, m in host.loaded.model.named_modules()
                                                 if n.endswith("_proj") and hasattr(m, "weight"))
    with merged_into_base(pm, "a"):
        merged = _logits(pm, ids)
    assert torch.allclose(merged, unmerged, atol=1e-5) and not torch.allclose(merged, base, atol=1e-2)
    after = pm.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # bit for bit
    assert torch.equal(_logits(pm, ids), unmerged)  # the adapter's own path is back on


def test_an_adapter_host_merges_only_what_it_may(tiny, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    dora = get_peft_model(LlamaForCausalLM.from_pretrained(tiny / "base"),
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True))
    dora.save_pretrained(tmp_path / "dora")
    host = _host(tiny)
    host.merge = "on"
    host.attach("plain", str(tiny / "good"))
    host.attach("dora", str(tmp_path / "dora"))
    assert host.merge_choices["plain"].merge and not host.merge_choices["dora"].merge
    assert "DoRA" in host.merge_choices["dora"].why
    _, ctx = host.model_for("dora")
    assert isinstance(ctx, contextlib.nullcontext)  # unmerged: the adapter's own layers
    # the merged weights are computed once per attached adapter, not once per pair (task)
    from eval import engine

    calls = []
    real = engine.merged_weights
    monkeypatch.setattr(engine, "merged_weights", lambda pm, name: calls.append(name) or real(pm, name))
    for _ in range(3):
        with host.model_for("plain")[1]:
            pass
    assert calls == ["plain"]
    host.detach("plain")
    assert "plain" not in host.merge_choices
    with pytest.raises(ValueError, match="merge"):
        AdapterHost(host.loaded, merge="yes")
