"""Token counts and padding (lora/estimate/tokens.py).

    .venv/bin/python -m pytest tests/estimate/test_tokens.py -q
"""
from __future__ import annotations

import pytest

from lora.core.errors import UserError
from lora.core.files import REPO_ROOT
from lora.estimate import DEFAULT_CHARS_PER_TOKEN, count_tokens, padding_factor
from tests.estimate.test_helpers import BUNDLED


# ---- tokens, output ------------------------------------------------------------------------------
def test_count_tokens_falls_back_to_a_stated_estimate(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"context": "abcdefgh", "target": "ij"}\n{"context": "abcd", "target": ""}\n')
    tc = count_tokens(data, "someone/Remote-Model", tmp_path)
    assert tc.estimated and f"{DEFAULT_CHARS_PER_TOKEN:g} chars/token" in tc.method
    assert (tc.rows, tc.tokens, tc.max_row_tokens) == (2, 3 + 1, 3)


@pytest.mark.skipif(not (BUNDLED / "tokenizer_config.json").is_file(), reason="bundled model not converted")
def test_count_tokens_uses_the_local_tokenizer():
    tc = count_tokens(REPO_ROOT / "data" / "train" / "fpb_train.jsonl", str(BUNDLED), REPO_ROOT)
    assert not tc.estimated and tc.method.startswith("tokenizer")
    assert tc.rows == 3628 and 20 < tc.tokens / tc.rows < 200


def test_padding_factor_grows_with_micro_batch():
    lengths = [10, 100] * 50
    assert padding_factor(lengths, 1, 4096) == 1.0
    assert padding_factor(lengths, 8, 4096) > 1.5


@pytest.mark.parametrize("line, says", [
    ('{"context": "a", "target": "b"', "not a JSON object"),
    ('{"context": "a"}', "row has no 'target'"),
    ('{"context": "a", "target": 3}', "'target' must be a string"),
    ('["context", "target"]', "expected an object"),
])
def test_count_tokens_names_file_and_line_of_a_bad_row(tmp_path, line, says):
    data = tmp_path / "d.jsonl"
    data.write_text('{"context": "ok", "target": "fine"}\n\n' + line + "\n")
    with pytest.raises(UserError) as err:
        count_tokens(data, "someone/Remote-Model", tmp_path)
    msg = str(err.value)
    assert f"{data}:3:" in msg and says in msg and "\n" not in msg


def test_count_tokens_of_a_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(UserError, match="dataset .* does not exist"):
        count_tokens(tmp_path / "nope.jsonl", "someone/Remote-Model", tmp_path)


def test_padding_factor_of_empty_rows_is_one():
    assert padding_factor([0, 0, 0], 2, 4096) == 1.0
    assert padding_factor([], 2, 4096) == 1.0


def test_count_tokens_with_a_name_too_long_for_the_file_system_estimates(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"context": "abcd", "target": "efgh"}\n')
    tc = count_tokens(data, "x" * 5000, tmp_path)
    assert tc.estimated and (tc.rows, tc.tokens) == (1, 2)
