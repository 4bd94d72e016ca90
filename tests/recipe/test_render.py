"""Rendering: pure, header with provenance, committed recipes up to date, accepted by axolotl."""
from __future__ import annotations

import jinja2
import pytest
import yaml

from lora.core.errors import UserError
from lora.recipe.registry import load_registry
from lora.recipe.render import (
    DEFAULT_REGISTRY,
    check_recipes,
    dataset_splits,
    recipe_inputs,
    render,
    template_environment,
    template_keys,
    validate_with_axolotl,
)
from tests.conftest import REPO, cpu_entry

SHIPPED = load_registry(DEFAULT_REGISTRY)


def shipped(name: str) -> dict:
    return yaml.safe_load(render(recipe_inputs(SHIPPED, name)))


def test_committed_recipes_are_up_to_date():
    assert check_recipes() == [], "run: finlora render"


def test_render_is_pure_and_says_where_it_came_from():
    a = render(recipe_inputs(SHIPPED, "sentiment_smollm2_cpu"))
    b = render(recipe_inputs(SHIPPED, "sentiment_smollm2_cpu"))
    assert a == b
    header = [line for line in a.splitlines() if line.startswith("#")][:6]
    assert 'entry "sentiment_smollm2_cpu"' in header[0] and "finetune_configs.json" in header[0]
    assert any("python finetune.py sentiment_smollm2_cpu" in line for line in header)
    assert any("accelerate launch --cpu" in line and "recipes/sentiment_smollm2_cpu.yaml" in line for line in header)


@pytest.mark.parametrize("name", list(SHIPPED.entries))
def test_shipped_recipe_has_no_machine_paths(name):
    text = render(recipe_inputs(SHIPPED, name))
    assert str(REPO) not in text and "/root" not in text and "/home" not in text
    cfg = yaml.safe_load(text)
    assert cfg["output_dir"] == f"lora_adapters/{name}"
    for ds in cfg["datasets"]:
        assert ds["path"].startswith("data/")


@pytest.mark.parametrize("name", list(SHIPPED.entries))
def test_axolotl_accepts_every_shipped_recipe(name):
    validate_with_axolotl(render(recipe_inputs(SHIPPED, name)), SHIPPED.get(name))


def test_cpu_profile_turns_off_cuda_only_features():
    cfg = shipped("sentiment_smollm2_cpu")
    assert cfg["bf16"] is False and cfg["attn_implementation"] == "sdpa"
    assert cfg["lora_mlp_kernel"] is cfg["lora_qkv_kernel"] is cfg["lora_o_kernel"] is False
    assert "deepspeed" not in cfg and cfg["gradient_checkpointing"] is False
    assert cfg["lora_target_linear"] is True
    # the answer is closed by the tokenizer's EOS, which axolotl appends and trains
    assert cfg["train_on_inputs"] is False
    assert cfg["datasets"][0]["type"]["format"] == "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def test_pod_profile_and_finlora_variants():
    """Catalogue recipes carry their published card's values (tests/recipe/test_finlora_recipes.py checks every key)."""
    from lora.recipe.finlora_cards import cards

    q8, card8 = shipped("formula_llama_3_1_8b_8bits_r8"), cards()["formula_llama_3_1_8b_8bits_r8"][1]
    assert q8["load_in_8bit"] is True and q8["adapter"] == card8["adapter"] == "lora" and q8["bf16"] is True
    assert q8["attn_implementation"] == "sdpa" and q8["gradient_checkpointing"] is True  # flash-attn: at launch
    assert q8["deepspeed"].endswith(card8["deepspeed"].rsplit("/", 1)[1]) and q8["optimizer"] == card8["optimizer"]
    assert sorted(q8["lora_target_modules"]) == sorted(card8["lora_target_modules"])
    assert q8["warmup_steps"] == card8["warmup_steps"] and "warmup_ratio" not in q8
    q4 = shipped("formula_llama_3_1_8b_4bits_r4")
    assert q4["load_in_4bit"] is True and q4["adapter"] == "qlora" and q4["lora_r"] == 4
    assert shipped("ner_llama_3_1_8b_8bits_r8_dora")["peft_use_dora"] is True
    assert shipped("ner_llama_3_1_8b_8bits_r8_rslora")["peft_use_rslora"] is True


@pytest.mark.parametrize("defaults, expected", [
    ("tuned", {"bnb_4bit_quant_storage": "bfloat16"}),
    # FinLoRA's quantisation (lora/recipe/defaults.py) with ZeRO-3's storage dtype, which does not change the values
    ("finlora", {"bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False,
                 "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "bfloat16"}),
])
def test_four_bit_with_zero3_stores_quantised_weights_as_bf16(workspace, defaults, expected):
    workspace.write({"z3": cpu_entry(quant_bits=4, profile="a5000x4", zero_stage=3, base_model="m/m", defaults=defaults)})
    reg = load_registry(workspace.registry)
    cfg = yaml.safe_load(render(recipe_inputs(reg, "z3", recipes_dir=workspace.recipes)))
    assert cfg["deepspeed"] == "templates/deepspeed/zero3.json"
    assert cfg["bnb_config_kwargs"] == expected
    validate_with_axolotl(render(recipe_inputs(reg, "z3")), reg.get("z3"))


def _header(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_header_names_the_defaults_set_and_what_the_profile_forced(workspace):
    finlora_on_cpu = {k: v for k, v in cpu_entry(quant_bits=8).items() if k not in ("defaults", "prompt_format")}
    reg = load_registry(workspace.write({"fin": finlora_on_cpu, "tuned": cpu_entry(), "fp16": {
        "base_model": "meta-llama/Llama-3.1-8B-Instruct", "dataset_path": cpu_entry()["dataset_path"],
        "lora_r": 8, "learning_rate": 1e-4}}))
    fin = render(recipe_inputs(reg, "fin", recipes_dir=workspace.recipes))
    head = _header(fin)
    assert any(line.startswith("# Defaults: finlora") for line in head)
    assert any("Forced by the cpu profile: bf16: off" in line for line in head)
    assert any("Forced by the cpu profile: zero_stage" in line for line in head)
    cfg = yaml.safe_load(fin)
    assert cfg["bf16"] is False and "deepspeed" not in cfg  # what the header says, not silently
    assert cfg["optimizer"] == "adamw_bnb_8bit"  # FinLoRA's 8-bit choice; bitsandbytes steps on CPU
    assert any(line.startswith("# Kept different from FinLoRA") for line in head)
    tuned = _header(render(recipe_inputs(reg, "tuned", recipes_dir=workspace.recipes)))
    assert any(line.startswith("# Defaults: tuned") for line in tuned) and not any("Kept" in line for line in tuned)
    fp16 = render(recipe_inputs(reg, "fp16", recipes_dir=workspace.recipes))
    assert any("16-bit base" in line for line in _header(fp16))
    assert yaml.safe_load(fp16)["optimizer"] == "adamw_torch_fused"  # FinLoRA's plain generator


def test_a_key_the_entry_sets_beats_either_defaults_set(workspace):
    explicit = dict(sample_packing=True, target_modules=["q_proj"], val_set_size=0.0, warmup_ratio=0.1,
                    optimizer="adamw_torch", prompt_format="raw", sequence_len=256, lora_dropout=0.0)
    reg = load_registry(workspace.write({d: cpu_entry(defaults=d, **explicit) for d in ("finlora", "tuned")}))
    for name in ("finlora", "tuned"):
        cfg = yaml.safe_load(render(recipe_inputs(reg, name, recipes_dir=workspace.recipes)))
        assert (cfg["sample_packing"], cfg["lora_target_modules"], cfg["val_set_size"], cfg["warmup_ratio"]) == (
            True, ["q_proj"], 0.0, 0.1)
        assert (cfg["optimizer"], cfg["sequence_len"], cfg["lora_dropout"]) == ("adamw_torch", 256, 0.0)
        assert cfg["datasets"][0]["type"]["format"] == "{instruction}" and "warmup_steps" not in cfg


def test_extra_datasets_with_weights(workspace):
    extra = workspace.root / "extra.jsonl"
    extra.write_text('{"context": "c", "target": "t"}\n')
    workspace.write({"mix": cpu_entry(extra_datasets=[{"path": "extra.jsonl", "weight": 2.25}])})
    reg = load_registry(workspace.registry)
    cfg = yaml.safe_load(render(recipe_inputs(reg, "mix")))
    splits = [(d["path"], d["split"]) for d in cfg["datasets"]]
    assert splits[0] == ("data/train/fpb_train.jsonl", "train")
    assert splits[1:] == [(str(extra), "train"), (str(extra), "train"), (str(extra), "train[:25%]")]


@pytest.mark.parametrize("weight, expected", [(1.0, ["train"]), (0.5, ["train[:50%]"]), (3.0, ["train"] * 3),
                                              (1.01, ["train", "train[:1%]"])])
def test_dataset_splits(weight, expected):
    assert [d["split"] for d in dataset_splits("x.jsonl", weight)] == expected


def test_template_environment_is_strict():
    with pytest.raises(jinja2.UndefinedError):
        template_environment().from_string("{{ not_defined }}").render()


BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c"]


@pytest.mark.parametrize("brk", BREAKS)
def test_no_line_break_in_a_comment_or_a_value_adds_a_key(workspace, brk):
    injected = f"x{brk}push_to_hub: true{brk}plugins: [evil.module]{brk}hub_model_id: me/x"
    data = workspace.root / f"d{brk}ata.jsonl".replace("\x00", "")
    data.write_text('{"context": "a", "target": "b"}\n')
    reg = load_registry(workspace.write({"run": cpu_entry(description=injected, dataset_path=str(data))}))
    text = render(recipe_inputs(reg, "run", recipes_dir=workspace.recipes))
    cfg = yaml.safe_load(text)
    assert not {"push_to_hub", "hub_model_id"} & set(cfg) and set(cfg) <= template_keys()
    assert cfg["plugins"] == ["lora.axolotl_cpu_bf16.CpuBf16"]  # the cpu profile's own plugin, nothing injected
    assert cfg["datasets"][0]["path"].endswith(f"d{brk}ata.jsonl")  # values keep their text, escaped


def test_render_refuses_a_recipe_with_keys_the_template_does_not_write(workspace, monkeypatch):
    import lora.recipe.render as render_module

    reg = load_registry(workspace.write({"run": cpu_entry()}))
    monkeypatch.setattr(render_module, "comment_text", lambda v: str(v))  # the escaping removed
    reg.entries["run"] = reg.entries["run"].model_copy(update={"description": "x\npush_to_hub: true"})
    with pytest.raises(UserError, match="push_to_hub"):
        render(recipe_inputs(reg, "run"))
