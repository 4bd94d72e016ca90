"""eval/kinds.py: one Kind object per task kind, looked up by name (fast, no model).

    .venv/bin/python -m pytest tests/eval/test_kinds.py -q
"""
from __future__ import annotations

from decimal import Decimal

import pytest

from eval import metrics as M
from eval.kinds import FINLORA_KINDS, KINDS, Kind, score_task


def test_every_kind_is_consistent():
    assert list(KINDS) == ["classification", "entities", "numeric", "exact", "text",
                           "finlora_labels", "finlora_entities", "finlora_bertscore"]
    assert FINLORA_KINDS == ("finlora_labels", "finlora_entities", "finlora_bertscore")
    for name, kind in KINDS.items():
        assert kind.name == name and kind.headline in kind.metrics and kind.max_new_tokens > 0


def test_defaults_are_the_documented_ones():
    c, n, t = KINDS["classification"], KINDS["numeric"], KINDS["text"]
    assert (c.metrics, c.headline, c.max_new_tokens, c.stop_at_newline) == (
        ("accuracy", "f1_weighted", "f1_macro"), "accuracy", 8, True)
    assert (n.metrics, n.headline, n.max_new_tokens, n.stop_at_newline) == (("accuracy",), "accuracy", 16, True)
    assert (t.metrics, t.headline, t.max_new_tokens, t.stop_at_newline) == (
        ("rouge1", "rouge2", "rougeL"), "rougeL", 128, False)
    assert [k.free_text for k in (c, n, t)] == [False, False, True]


def test_targets():
    c, n, t = KINDS["classification"], KINDS["numeric"], KINDS["text"]
    assert c.normalize_target(" Positive ") == "positive" and t.normalize_target(" Keep Case ") == "Keep Case"
    assert c.target_problem("meh", ("negative", "positive")) == "is not one of the labels negative, positive"
    assert c.target_problem("meh", None) is None  # no label set yet: the data defines it
    assert n.target_problem("$1,000.5", None) is None and n.target_problem("twelve", None) == "is not a number"
    assert t.target_problem("anything", None) is None
    assert c.derive_labels(["b", "a", "b"]) == ("a", "b") and n.derive_labels(["1"]) is None


def test_score_dispatches_to_the_kinds_scorer():
    outs, targets = ["negative", "positive!", "??"], ["negative", "negative", "positive"]
    assert score_task("classification", outs, targets, ("negative", "positive")) == \
        M.score_classification(outs, targets, ["negative", "positive"])
    assert score_task("numeric", ["1.00"], ["1"], with_intervals=False) == M.score_numeric(["1.00"], ["1"], with_intervals=False)
    with pytest.raises(ValueError, match="label set"):
        score_task("classification", outs, targets)


def test_a_new_kind_is_one_object():
    # What "adding a kind" means: one Kind; its scorer, target check and defaults come with it.
    def exact(outputs, targets, labels, with_intervals=True):
        rows = [{"parsed": o.strip(), "correct": o.strip() == t} for o, t in zip(outputs, targets, strict=True)]
        return {"n": len(rows), "exact": sum(r["correct"] for r in rows) / len(rows)}, rows

    kind = Kind("exact", ("exact",), "exact", 4, True, exact, numeric_targets=True)
    assert kind.score(["1 ", "2"], ["1", "3"])[0] == {"n": 2, "exact": 0.5}
    assert kind.target_problem("x", None) == "is not a number"
    assert M.parse_target_number("3") == Decimal("3")


def test_entity_targets_are_checked_per_entity():
    e = KINDS["entities"]
    assert e.normalize_target(" Revenues, Assets ") == "revenues, assets"
    assert e.derive_labels(["revenues, assets", "assets"]) == ("assets", "revenues")
    assert e.target_problem("revenues, debt", ("assets", "revenues")) == \
        "has 'debt', which is not one of the labels assets, revenues"
    assert e.target_problem("revenues,assets", ("assets", "revenues")) is None


def test_exact_kind_ignores_whitespace_and_case():
    x = KINDS["exact"]
    metrics, rows = x.score(["(Revenues - Cost) / revenues\nmore", "Revenues"], ["(Revenues-Cost)/Revenues", "Cost"],
                            with_intervals=False)
    assert [r["correct"] for r in rows] == [True, False] and metrics["accuracy"] == 0.5


def test_finlora_kinds_keep_targets_as_written_and_read_after_the_cue():
    f = KINDS["finlora_labels"]
    assert not f.stop_at_newline and f.normalize_target(" Positive ") == " Positive "
    assert f.normalize_targets(["15092.40", "3"]) == ["15092.4", "3.0"]  # pandas.read_json's column rule
    assert f.answer("Q\nAnswer: ", "neutral\nAnswer: negative ") == "negative"
    assert KINDS["classification"].answer("Q\nAnswer: ", "x\nAnswer: y") == "x\nAnswer: y"
    assert KINDS["finlora_bertscore"].needs_encoder and not KINDS["finlora_labels"].needs_encoder
    with pytest.raises(ValueError, match="encoder"):
        KINDS["finlora_bertscore"].score(["a"], ["b"])
