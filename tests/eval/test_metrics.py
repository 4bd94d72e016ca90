"""Answer parsing and metrics against hand-made cases and independent computations (fast, no model).

    .venv/bin/python -m pytest tests/eval/test_metrics.py -q
"""
from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from eval import metrics as M

SENT = ["negative", "neutral", "positive"]
GRADED = ["strong negative", "moderately negative", "mildly negative", "negative", "neutral",
          "mildly positive", "moderately positive", "positive", "strong positive"]


@pytest.mark.parametrize("answer,labels,expected", [
    ("negative", SENT, "negative"),
    ("Negative.", SENT, "negative"),
    ("  POSITIVE ", SENT, "positive"),
    ("The sentiment of this news is neutral, not positive.", SENT, "neutral"),
    ("positive or negative", SENT, "positive"),  # earliest mention wins
    ("I cannot tell", SENT, None),
    ("", SENT, None),
    ("strong negative", GRADED, "strong negative"),  # never read as "negative"
    ("Strong Negative sentiment", GRADED, "strong negative"),
    ("mildly positive", GRADED, "mildly positive"),  # never read as "positive"
    ("negative", GRADED, "negative"),
    ("it is moderately positive, not negative", GRADED, "moderately positive"),
    ("organization", ["location", "organization", "person"], "organization"),
    ("Person", ["location", "organization", "person"], "person"),
])
def test_parse_label(answer, labels, expected):
    assert M.parse_label(answer, labels) == expected


def test_parse_label_tie_goes_to_longest_regardless_of_order():
    assert M.parse_label("negative outlook", ["negative", "negative outlook"]) == "negative outlook"
    assert M.parse_label("negative outlook", ["negative outlook", "negative"]) == "negative outlook"


def test_first_answer_line_skips_leading_blank_lines():
    assert M.first_answer_line("\n\n positive\nnegative") == " positive"
    assert M.first_answer_line("") == ""


@pytest.mark.parametrize("answer,expected", [
    ("15092.44", (Decimal("15092.44"), False)),
    ("The answer is $1,234.56.", (Decimal("1234.56"), False)),
    ("-$5", (Decimal("-5"), False)),
    ("$-5.5", (Decimal("-5.5"), False)),
    ("+3.5%", (Decimal("3.5"), True)),
    ("rate: 12 %", (Decimal("12"), True)),
    ("\u22127", (Decimal("-7"), False)),  # unicode minus
    (".5", (Decimal("0.5"), False)),
    ("1,23", (Decimal("1"), False)),  # not a thousands group: the first number is 1
    ("Q-3 result 10", (Decimal("3"), False)),  # a hyphen glued to a word is not a sign
    ("1,000,000 dollars and 5", (Decimal("1000000"), False)),
    ("no number here", None),
])
def test_parse_number(answer, expected):
    assert M.parse_number(answer) == expected


@pytest.mark.parametrize("answer,target,expected", [
    ("15092.44", "15092.44", True),
    ("15092.45", "15092.44", True),  # exactly 0.01 away: inside (Decimal, no float fuzz)
    ("15092.43", "15092.44", True),
    ("15092.46", "15092.44", False),
    ("$15,092.44", "15092.44", True),
    ("The NPV is 15092.449", "15092.44", True),
    ("5%", "0.05", True),  # a percentage may be meant as a rate
    ("5%", "5.0", True),
    ("5", "0.05", False),
    ("-2.5", "2.5", False),
    ("about ten", "10", False),
])
def test_numeric_correct(answer, target, expected):
    assert M.numeric_correct(answer, M.parse_target_number(target)) is expected


def _random_case(rng: random.Random, n: int, labels: list[str]):
    y_true = [rng.choice(labels) for _ in range(n)]
    y_pred = [rng.choice(labels + [None]) for _ in range(n)]
    return y_true, y_pred


def _sklearn(y_true, y_pred, labels):
    pred = [p if p is not None else "__none__" for p in y_pred]
    used = [label for label in labels if label in set(y_true) | set(pred)]
    return {
        "accuracy": accuracy_score(y_true, pred),
        "f1_weighted": f1_score(y_true, pred, labels=used, average="weighted", zero_division=0),
        "f1_macro": f1_score(y_true, pred, labels=used, average="macro", zero_division=0),
    }


def test_classification_metrics_match_sklearn():
    rng = random.Random(7)
    for n in (1, 5, 40, 300):
        y_true, y_pred = _random_case(rng, n, SENT)
        got = M.classification_metrics(y_true, y_pred, SENT)
        want = _sklearn(y_true, y_pred, SENT)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-12), (n, k)
        assert got["unparsed"] == sum(p is None for p in y_pred)


def test_hand_made_classification():
    y_true = ["negative", "negative", "neutral", "positive"]
    answers = ["strong negative", "negative.", "Neutral", "I think so"]
    metrics, rows = M.score_classification(answers, y_true, SENT)
    # "strong negative" is not a label of this task: it mentions "negative" -> correct
    assert [r["parsed"] for r in rows] == ["negative", "negative", "neutral", None]
    assert metrics["accuracy"] == 0.75
    assert metrics["unparsed"] == 1
    # by hand: negative F1 1, neutral F1 1, positive F1 0 (support 1): weighted = 3/4, macro = 2/3
    assert metrics["f1_weighted"] == pytest.approx(0.75)
    assert metrics["f1_macro"] == pytest.approx(2 / 3)


def test_bootstrap_resamples_match_sklearn_each():
    rng = random.Random(3)
    y_true, y_pred = _random_case(rng, 60, SENT)
    samples = M.bootstrap_classification_samples(y_true, y_pred, SENT, resamples=25, seed=11)
    idx = M.resample_indices(60, 25, 11)
    for j in range(25):
        t = [y_true[i] for i in idx[j]]
        p = [y_pred[i] for i in idx[j]]
        want = _sklearn(t, p, SENT)
        for k in want:
            assert samples[k][j] == pytest.approx(want[k], abs=1e-12), (j, k)


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    rng = random.Random(5)
    y_true, y_pred = _random_case(rng, 200, SENT)
    a = M.bootstrap_classification(y_true, y_pred, SENT)
    b = M.bootstrap_classification(y_true, y_pred, SENT)
    assert a == b
    point = M.classification_metrics(y_true, y_pred, SENT)
    for k, (lo, hi) in a.items():
        assert lo <= point[k] <= hi
    values = [float(x) for x in np.random.default_rng(0).random(50)]
    lo, hi = M.bootstrap_mean(values)
    assert lo < np.mean(values) < hi
    means = np.asarray(values)[M.resample_indices(50)].mean(axis=1)
    assert [lo, hi] == [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def test_numeric_score_task():
    metrics, rows = M.score_numeric(["15092.45\nmore", "$2,297.17", "none"], ["15092.44", "2297.17", "3"])
    assert [r["correct"] for r in rows] == [True, True, False]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["unparsed"] == 1
    assert len(metrics["ci"]["accuracy"]) == 2


def test_text_score_matches_rouge_score():
    from rouge_score import rouge_scorer

    outs = ["The liability for frequent flyer miles.", "", "Revenue recognized over time"]
    refs = ["Value of revenue deferred for frequent flyer programs.", "Something", "Revenue recognized over time"]
    metrics, rows = M.score_text(outs, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for k in ("rouge1", "rouge2", "rougeL"):
        want = [scorer.score(r, o.strip())[k].fmeasure for o, r in zip(outs, refs, strict=True)]
        assert metrics[k] == pytest.approx(float(np.mean(want)), abs=1e-12)
        assert [row[k] for row in rows] == pytest.approx(want)
    assert rows[2]["rougeL"] == 1.0


def test_entities_blank_pieces_and_blank_label():
    # a blank target entity is a label of its own; a blank answer piece is that label, or unparsed without it
    metrics, rows = M.score_entities(["a,,b", "a"], ["a,,b", "a,b"], ["", "a", "b"], with_intervals=False)
    assert [r["parsed"] for r in rows] == [["a", "", "b"], ["a", ""]]
    assert metrics["accuracy"] == pytest.approx(4 / 5) and metrics["entities"] == 5
    metrics, rows = M.score_entities(["a"], ["a,b"], ["a", "b"], with_intervals=False)
    assert rows[0]["parsed"] == ["a", None] and metrics["unparsed"] == 1


def test_exact_key():
    assert M.exact_key(" (A - B)\t/ c ") == M.exact_key("(a-b)/C") == "(a-b)/c"
    assert M.score_exact(["", "x"], ["y", "X"], with_intervals=False)[0] == {"n": 2, "accuracy": 0.5, "unparsed": 1}
