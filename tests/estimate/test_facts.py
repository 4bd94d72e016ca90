"""Facts lookup (lora/estimate/facts.py): the shipped table, local config.json, refusal when facts are missing.

    .venv/bin/python -m pytest tests/estimate/test_facts.py -q
"""
from __future__ import annotations

import json

import pytest

from lora.core.files import REPO_ROOT
from lora.estimate import FACTS_PATH, MissingFacts, arch_from_config, load_arch
from tests.estimate.test_helpers import LLAMA8B, write_tiny_llama


# ---- facts --------------------------------------------------------------------------------------
def test_shipped_facts_reproduce_published_parameter_counts():
    a8 = load_arch(LLAMA8B, REPO_ROOT)
    assert a8.total_params == 8_030_261_248  # FinLoRA's table: 8.03B
    assert "model_facts.json" in a8.source
    a70 = load_arch("meta-llama/Llama-3.1-70B-Instruct", REPO_ROOT)
    assert round(a70.total_params / 1e9, 2) == 70.55
    smol = load_arch("HuggingFaceTB/SmolLM2-135M-Instruct", REPO_ROOT)
    assert smol.tie_word_embeddings and smol.total_params == 134_515_008


def test_shipped_totals_match_the_derivation_from_shapes():
    table = json.loads(FACTS_PATH.read_text())
    for name, entry in table["models"].items():
        derived = arch_from_config({k: v for k, v in entry.items() if k != "total_params"})
        assert derived.total_params == entry["total_params"], name


def test_local_config_wins_over_the_table(tmp_path):
    folder = write_tiny_llama(tmp_path / "tiny")
    arch = load_arch(str(folder), tmp_path)
    assert arch.hidden_size == 64 and arch.tie_word_embeddings is False  # LlamaConfig's default
    assert str(folder / "config.json") in arch.source
    # relative to the repo root, as recipes write it
    assert load_arch("tiny", tmp_path).num_key_value_heads == 2


def test_unknown_model_names_the_missing_facts_and_where_it_looked(tmp_path):
    with pytest.raises(MissingFacts) as err:
        load_arch("someone/Unknown-7B", tmp_path)
    msg = str(err.value)
    assert "hidden_size" in msg and "vocab_size" in msg
    assert "no config.json at" in msg and "model_facts.json" in msg


def test_incomplete_config_is_refused_not_guessed(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"hidden_size": 64, "vocab_size": 10}))
    with pytest.raises(MissingFacts, match="intermediate_size"):
        load_arch("m", tmp_path)


def test_missing_facts_message_is_one_line_even_for_a_name_with_line_breaks(tmp_path):
    with pytest.raises(MissingFacts) as err:
        load_arch("evil\nmodel\r\nname", tmp_path)
    assert "\n" not in str(err.value) and "\r" not in str(err.value) and "evil" in str(err.value)


@pytest.mark.parametrize("text, says", [
    ("{not json", "cannot be read as JSON (JSONDecodeError"),
    (b"\xff\xfe\x00", "cannot be read as JSON (UnicodeDecodeError"),
    ("[1, 2, 3]", "is not a config object"),
    ('{"text_config": [1], "hidden_size": 64}', "is not a config object"),
    ('{"hidden_size": "64", "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 100}', "lacks hidden_size"),
    ('{"hidden_size": true, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 100}', "lacks hidden_size"),
    ('{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 1' + "0" * 400 + '}', "lacks vocab_size"),
    ('{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 100, "head_dim": "16"}', "head_dim '16' is not a positive integer"),
    ('{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, '
     '"vocab_size": 100, "num_key_value_heads": -2}', "num_key_value_heads -2 is not a positive integer"),
])
def test_hostile_config_json_is_refused_in_one_line(tmp_path, text, says):
    (tmp_path / "m").mkdir()
    target = tmp_path / "m" / "config.json"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(MissingFacts) as err:
        load_arch("m", tmp_path)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_name_too_long_for_the_file_system_is_looked_up_in_the_table(tmp_path):
    with pytest.raises(MissingFacts, match="cannot plan for 'xxxx") as err:  # not OSError: name too long
        load_arch("x" * 5000, tmp_path)
    assert len(str(err.value)) <= 600
    with pytest.raises(MissingFacts, match="looked: no config.json at"):
        load_arch("~no_such_user_here/model", tmp_path)
