"""lora/core/names.py: the one rule for names that become file names (run names, task names)."""
from __future__ import annotations

import pytest

from lora.core.errors import UserError
from lora.core.names import MAX_NAME_LEN, check_name, name_problem


@pytest.mark.parametrize("name", ["sentiment_llama_3_1_8b_8bits_r8", "a", "run-2.v1", "9x"])
def test_safe_names(name):
    assert check_name(name, "run name") == name and name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a..b", "-x", "_x", "a b", "a\nb",
                                  "x" * (MAX_NAME_LEN + 1), "é", "a\x00b", 3, None])
def test_unsafe_names_are_one_line_errors(name):
    with pytest.raises(UserError) as err:
        check_name(name, "run name")
    assert str(err.value).startswith("run name") and "\n" not in str(err.value)
