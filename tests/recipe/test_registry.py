"""Registry validation: every bad-input case is one line naming the entry, the key and the fix."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from lora.cli.shims import finetune_main as main
from lora.recipe.registry import Entry, UserError, load_registry
from tests.conftest import REPO, cpu_entry


def run_cli(capsys, workspace, *args):
    code = main(workspace.argv(*args))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"lora_rank": 8}, ["entry 'bad'", "unknown key 'lora_rank'", "did you mean 'lora_r'"]),
        ({"lora_r": "eight"}, ["entry 'bad'", "key 'lora_r'", "valid integer", '"eight"']),
        ({"quant_bits": 3}, ["entry 'bad'", "key 'quant_bits'", "4, 8 or 16", "got 3"]),
        ({"profile": "a5000x8"}, ["key 'profile'", "unknown profile 'a5000x8'", "did you mean 'a5000x4'"]),
        ({"prompt_format": "chatlm"}, ["key 'prompt_format'", "did you mean 'chatml'"]),
        ({"quant_bits": 8, "profile": "a5000x4", "zero_stage": 3}, ["zero_stage: ZeRO-3 cannot partition bitsandbytes 8-bit"]),
        ({"peft_use_dora": True, "quant_bits": 4, "profile": "a5000x4", "zero_stage": 3}, ["zero_stage: DoRA"]),
        ({"zero_stage": 2, "quant_bits": 4}, ["zero_stage: DeepSpeed ZeRO-2 on the cpu profile runs 16-bit bases only"]),
        ({"peft_use_dora": True, "quant_bits": 8}, ["peft_use_dora: DoRA on an 8-bit base fails on CPU", "quant_bits 4 or 16"]),
        ({"target_modules": []}, ["key 'target_modules'", "empty list"]),
        ({"extra_datasets": [{"path": "x.jsonl", "weight": 0.333}]}, ["extra_datasets.0.weight", "steps of 0.01"]),
        ({"val_set_size": 2.5}, ["key 'val_set_size'", "whole"]),
        ({"defaults": "finlroa"}, ["entry 'bad'", "key 'defaults'", "unknown defaults set 'finlroa'",
                                   "did you mean 'finlora'"]),
        ({"optimizer": "adamw_bnb8bit"}, ["key 'optimizer'", "did you mean 'adamw_bnb_8bit'"]),
        ({"warmup_steps": 10, "warmup_ratio": 0.03}, ["entry 'bad': warmup_steps and warmup_ratio: give one"]),
    ],
)
def test_bad_entry_exits_2_names_entry_and_key_writes_nothing(capsys, workspace, change, expected):
    workspace.write({"bad": cpu_entry(**change)})
    code, err = run_cli(capsys, workspace, "bad", "--dry-run")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in expected:
        assert fragment in lines[0]
    assert workspace.written() == []


def test_missing_required_key(capsys, workspace):
    entry = cpu_entry()
    del entry["learning_rate"]
    workspace.write({"bad": entry})
    code, err = run_cli(capsys, workspace, "bad")
    assert code == 2 and "entry 'bad': missing required key 'learning_rate'" in err


def test_invalid_json_reports_line_and_column(capsys, workspace):
    workspace.write('{\n  "a": {"base_model": "x",\n  }\n}')
    code, err = run_cli(capsys, workspace, "a")
    assert code == 2
    assert "not valid JSON at line 3 column 3" in err


def test_unknown_run_suggests_close_names_and_list(capsys, workspace):
    workspace.write({"sentiment_cpu": cpu_entry(), "formula_cpu": cpu_entry()})
    code, err = run_cli(capsys, workspace, "sentimnet_cpu")
    assert code == 2
    assert "unknown run 'sentimnet_cpu'; did you mean 'sentiment_cpu'?" in err
    assert "--list" in err


def test_entry_not_an_object(capsys, workspace):
    workspace.write({"a": [1, 2]})
    code, err = run_cli(capsys, workspace, "a")
    assert code == 2 and "entry 'a': must be a JSON object" in err


def test_finlora_entry_is_accepted_unchanged(tmp_path):
    """FinLoRA's documented example entry, verbatim: 16-bit default, variant naming as FinLoRA's folders."""
    finlora = {
        "sentiment_llama_3_1_8b_8bits_r8": {
            "base_model": "meta-llama/Llama-3.1-8B-Instruct",
            "dataset_path": "../data/train/finlora_sentiment_train.jsonl",
            "lora_r": 8,
            "quant_bits": 8,
            "learning_rate": 0.0001,
            "num_epochs": 4,
            "batch_size": 8,
            "gradient_accumulation_steps": 2,
        },
        "x_dora": {"base_model": "m/m", "dataset_path": "d.jsonl", "lora_r": 8, "learning_rate": 1e-4,
                   "peft_use_dora": True, "lora_alpha": 16},
    }
    path = tmp_path / "lora" / "finetune_configs.json"
    path.parent.mkdir()
    path.write_text(json.dumps(finlora))
    reg = load_registry(path)
    e = reg.get("sentiment_llama_3_1_8b_8bits_r8")
    assert e.variant == "8bits_r8" and e.profile == "a5000x4" and e.defaults == "finlora"
    # FinLoRA's generator's values (lora/finetune.py at 7e1cf82), not ours
    r = e.resolved
    assert (r.prompt_format, sorted(r.target_modules), r.val_set_size, r.warmup_steps, r.warmup_ratio) == (
        "finlora_inst", ["k_proj", "q_proj", "v_proj"], 0.02, 10, None)
    assert (r.sample_packing, r.zero_stage, r.optimizer, r.lora_dropout) == (False, 1, "adamw_bnb_8bit", 0.05)
    assert reg.get("x_dora").variant == "fp16_r8_dora"
    assert reg.get("x_dora").resolved.optimizer == "adamw_torch_fused"  # finetune_lora_plain.py
    # relative dataset paths resolve against the registry file's folder, as in FinLoRA
    assert reg.resolve_path(e.dataset_path) == (tmp_path / "data" / "train" / "finlora_sentiment_train.jsonl")


def test_shipped_registry_loads_and_covers_the_catalogue():
    reg = load_registry(REPO / "finetune_configs.json")
    tasks = ["sentiment", "headline", "ner", "finer", "xbrl_term", "xbrl_extract", "formula", "financebench"]
    for task in tasks:
        for variant in ("8bits_r8", "4bits_r4", "8bits_r8_dora", "8bits_r8_rslora"):
            e = reg.get(f"{task}_llama_3_1_8b_{variant}")
            assert e.variant == variant and e.profile == "a5000x4" and e.defaults == "finlora"
    for task in ["sentiment", "headline", "ner", "formula", "financebench", "xbrl_term"]:
        assert reg.get(f"{task}_llama_3_1_8b_fp16_r8").quant_bits == 16
    cpu = [n for n, e in reg.entries.items() if e.profile == "cpu"]
    assert {"sentiment_smollm2_cpu", "formula_smollm2_cpu"} <= set(cpu)
    assert all(reg.get(n).defaults == "tuned" for n in cpu)  # our demo entries ask for our defaults


def test_entry_model_forbids_extra_keys_directly():
    with pytest.raises(ValidationError, match="typo"):
        Entry.model_validate(cpu_entry(typo=1))


def test_user_error_is_exit_code_2_at_the_cli(capsys, workspace):
    workspace.write({"run": cpu_entry()})
    code = main(workspace.argv("no_such_run"))
    assert code == UserError.exit_code == 2 and capsys.readouterr().err.startswith("error: unknown run")


def test_docs_key_tables_are_generated_from_the_entry_model():
    from lora.recipe.registry_doc import DOC, tables, updated

    text = DOC.read_text(encoding="utf-8")
    assert updated(text) == text, "docs/registry.md is stale: run python -m lora.recipe.registry_doc"
    for body in tables().values():
        assert body in text
    assert all(f"| `{key}` |" in text for key in Entry.model_fields)  # every key documented, none forgotten


def test_a_typo_of_a_required_key_names_the_typo(capsys, workspace):
    entry = cpu_entry()
    entry["lora_rr"] = entry.pop("lora_r")
    workspace.write({"run": entry})
    assert main(workspace.argv("run", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: entry 'run': unknown key 'lora_rr'; did you mean 'lora_r'") and err.count("\n") == 1
    assert workspace.written() == []
