"""lora/recipe/sweep.py: parsing KEY=V1,V2, the product, names, validation by the registry schema, the registry file.

    .venv/bin/python -m pytest tests/recipe/test_sweep.py -q
"""
from __future__ import annotations

import json

import pytest

from lora.core.errors import UserError
from lora.core.names import name_problem
from lora.recipe.registry import load_registry
from lora.recipe.sweep import derived_name, expand, parse_sweep, run_count, split_values, write_sweep_registry
from tests.conftest import cpu_entry


@pytest.fixture
def registry(workspace):
    workspace.write({"tiny": cpu_entry(description="the base")})
    return load_registry(workspace.registry)


def test_values_are_json_when_they_parse_else_text_and_split_outside_brackets():
    keys = parse_sweep(["lora_r=4,8", "learning_rate=1e-4,5e-4", "lr_scheduler=cosine,linear",
                        'target_modules=["q_proj","v_proj"],all-linear', "peft_use_dora=true,false"])
    assert [k.values for k in keys] == [(4, 8), (1e-4, 5e-4), ("cosine", "linear"),
                                        (["q_proj", "v_proj"], "all-linear"), (True, False)]
    assert run_count(keys) == 32
    assert split_values('a,"b,c",[1,2]') == ["a", '"b,c"', "[1,2]"]


@pytest.mark.parametrize("arg, fragment", [
    ("lora_rr=4,8", "no key 'lora_rr'; did you mean 'lora_r'"),
    ("lora_r", "write KEY=V1,V2"),
    ("lora_r=", "write KEY=V1,V2"),
    ("lora_r=4,,8", "an empty value"),
    ("lora_r=4,4", "value '4' given twice"),
])
def test_bad_sweep_arguments_are_one_line_naming_the_key(arg, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("?", r"\?")):
        parse_sweep([arg])


def test_a_key_given_twice_is_refused():
    with pytest.raises(UserError, match="lora_r: given twice"):
        parse_sweep(["lora_r=4", "lora_r=8"])


def test_product_in_given_order_with_readable_deterministic_names(registry):
    derived = expand(registry, "tiny", parse_sweep(["lora_r=4,8", "learning_rate=1e-4,5e-4"]))
    assert [d.name for d in derived] == ["tiny-lora_r4-learning_rate0.0001", "tiny-lora_r4-learning_rate0.0005",
                                         "tiny-lora_r8-learning_rate0.0001", "tiny-lora_r8-learning_rate0.0005"]
    assert derived[3].entry.lora_r == 8 and derived[3].entry.learning_rate == 5e-4
    assert derived[3].swept == {"lora_r": 8, "learning_rate": 5e-4}
    assert derived[0].entry.max_steps == 2 and derived[0].entry.profile == "cpu"  # the rest is the base's
    assert derived[0].entry.description == 'sweep of tiny: lora_r=4, learning_rate=0.0001'
    again = expand(registry, "tiny", parse_sweep(["lora_r=4,8", "learning_rate=1e-4,5e-4"]))
    assert [d.name for d in again] == [d.name for d in derived]


def test_unsafe_or_long_names_fall_back_to_a_hash_that_is_still_a_safe_name():
    odd = derived_name("tiny", {"target_modules": ["q_proj", "v_proj"]})
    assert odd == "tiny-target_modulesq_proj_v_proj" and name_problem(odd) is None
    long = derived_name("t" * 110, {"learning_rate": 0.000123456})
    assert "-sweep-" in long and name_problem(long) is None
    assert long == derived_name("t" * 110, {"learning_rate": 0.000123456})


@pytest.mark.parametrize("arg, fragment", [
    ("lora_r=4,abc", "--sweep lora_r=abc: key 'lora_r': Input should be a valid integer"),
    ("lora_r=0,4", "--sweep lora_r=0: key 'lora_r'"),
    ("profile=cpu,a500x4", "did you mean 'a5000x4'"),
    ("optimizer=adamw_torh", "did you mean 'adamw_torch'"),
])
def test_wrong_values_are_refused_by_the_schema_naming_key_and_value(registry, arg, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("?", r"\?")):
        expand(registry, "tiny", parse_sweep([arg]))


def test_a_combination_the_schema_refuses_names_the_combination(registry):
    with pytest.raises(UserError, match=r"--sweep warmup_steps=5, warmup_ratio=0.1: warmup_steps and warmup_ratio"):
        expand(registry, "tiny", parse_sweep(["warmup_steps=5", "warmup_ratio=0.1"]))


def test_unknown_base_entry_has_close_matches(registry):
    with pytest.raises(UserError, match="unknown run 'tinny'; did you mean 'tiny'"):
        expand(registry, "tinny", parse_sweep(["lora_r=4"]))


def test_sweep_registry_is_a_registry_whose_relative_paths_still_resolve(workspace):
    (workspace.root / "data").mkdir()
    data = workspace.root / "data" / "rows.jsonl"
    data.write_text('{"context": "c", "target": "t"}\n')
    workspace.write({"tiny": cpu_entry(dataset_path="data/rows.jsonl", base_model="./models/m")})
    registry = load_registry(workspace.registry)
    derived = expand(registry, "tiny", parse_sweep(["lora_r=4,8"]))
    target = workspace.adapters / "queues" / "q" / "sweep.json"
    write_sweep_registry(target, derived, registry)
    raw = json.loads(target.read_text())
    assert list(raw) == ["tiny-lora_r4", "tiny-lora_r8"]
    assert raw["tiny-lora_r4"]["dataset_path"] == "../../../data/rows.jsonl"
    assert raw["tiny-lora_r4"]["base_model"] == "../../../models/m"
    again = load_registry(target)
    assert again.resolve_path(again.get("tiny-lora_r8").dataset_path) == data.resolve()
    assert again.get("tiny-lora_r8").lora_r == 8
