"""Answer parsing and metrics: pure functions, no model, no files.

    python -m eval score --task fpb --predictions preds.jsonl     # the CLI edge over these functions

Which scorer a task uses is its kind's (eval/kinds.py).

Rules (docs/eval.md repeats them for users):
- classification: lower-case the answer; the label whose mention starts earliest wins; when two labels
  start at the same place the longest wins ("strong negative" is never read as "negative" when both are
  labels); no label -> unparsed, counted wrong. Accuracy, weighted F1 and macro F1 come from scikit-learn.
- numeric: the first number in the answer ($, thousands commas, %, leading sign handled) is correct when
  it equals the target within an absolute 0.01 (compared as Decimals, so 0.01 is exact, not 0.0100000001).
- entities (FiNER, FNXL): the answer's first line and the target are split on ',' into entities (FinLoRA's
  process_batched: pieces stripped, the answer truncated or padded with "" to the target's count); each
  entity is then read as a classification answer over the entity labels. Metrics over all entities.
- exact (formula construction): the answer's first line equals the target once whitespace is removed and
  case is folded.
- text: ROUGE-1/2/L F-measure from rouge-score (stemming on), averaged over rows.
Every headline metric gets a bootstrap 95% interval (percentile, 1000 resamples, fixed seed).
"""
from __future__ import annotations

import re
from decimal import Decimal

import numpy as np

TOLERANCE = Decimal("0.01")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
UNPARSED = None  # what parse_label / parse_number return when the answer holds no label / number

# ---------------------------------------------------------------- parsing


def first_answer_line(text: str) -> str:
    """The first line that has content: generation stops at the newline after the answer, but a
    model may open with a blank line (e.g. right after "Answer: ")."""
    for line in text.split("\n"):
        if line.strip():
            return line
    return ""


def parse_label(answer: str, labels: list[str] | tuple[str, ...]) -> str | None:
    """The label the answer names (earliest mention; longest on a tie), or None."""
    text = answer.lower()
    best: tuple[int, int, str] | None = None  # (start, -length, label): min() picks earliest, then longest
    for label in labels:
        start = text.find(label.lower())
        if start < 0:
            continue
        key = (start, -len(label), label)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


# A sign only counts when it is not glued to a word ("Q-3" is 3, not -3); "$-5" and "-$5" both read -5.
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9])(?P<sign>[-+\u2212])?\s*\$?\s*(?P<sign2>[-+\u2212])?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?P<pct>\s*%)?"
)


def parse_number(answer: str) -> tuple[Decimal, bool] | None:
    """(value, had_percent_sign) for the first number in the answer, or None."""
    m = _NUMBER.search(answer)
    if m is None:
        return None
    value = Decimal(m.group("num").replace(",", ""))
    if (m.group("sign") or m.group("sign2") or "+") in ("-", "\u2212"):
        value = -value
    return value, m.group("pct") is not None


def parse_target_number(target: str) -> Decimal | None:
    parsed = parse_number(target)
    return None if parsed is None else parsed[0]


def numeric_correct(answer: str, target: Decimal) -> bool:
    """First number within 0.01 of the target. "5%" is read as 5 and also as 0.05, because the
    formula questions give rates both ways and the answer cannot say which one the target uses."""
    parsed = parse_number(answer)
    if parsed is None:
        return False
    value, pct = parsed
    candidates = [value, value / 100] if pct else [value]
    return any(abs(c - target) <= TOLERANCE for c in candidates)


def _target_number(text: str) -> Decimal:
    value = parse_target_number(text)
    if value is None:
        raise ValueError(f"numeric target is not a number: {text!r}")
    return value


def split_entities(text: str) -> list[str]:
    """FinLoRA's per-entity split (test/test_dataset.py process_batched): on ',', each piece stripped and its newlines removed."""
    return [x.strip().replace("\n", "") for x in text.split(",")]


def process_batched(answers: list[str], targets: list[str]) -> tuple[list[str], list[str], list[int]]:
    """FinLoRA's process_batched: split answer and target into entities; the answer is truncated or padded
    with "" to the target's count. Returns the flattened answers, the flattened targets and, per row, how
    many entities it contributed (to fold per-entity results back into rows)."""
    flat_answers, flat_targets, counts = [], [], []
    for answer, target in zip(answers, targets, strict=True):
        want = split_entities(target)
        got = split_entities(answer)
        got = got[:len(want)] + [""] * (len(want) - len(got))
        flat_answers += got
        flat_targets += want
        counts.append(len(want))
    return flat_answers, flat_targets, counts


def fold_rows(per_entity: list[dict], counts: list[int]) -> list[dict]:
    """Per-entity {parsed, correct} -> one detail per row: the parsed list and the fraction right."""
    rows, i = [], 0
    for c in counts:
        chunk = per_entity[i:i + c]
        i += c
        rows.append({"parsed": [d["parsed"] for d in chunk],
                     "correct": sum(d["correct"] for d in chunk) / c if c else 0.0})
    return rows


# ---------------------------------------------------------------- metrics


def classification_labels_used(y_true: list[str], y_pred: list[str | None], labels: list[str]) -> list[str]:
    """The labels F1 averages over: task labels that occur in the targets or the parsed predictions.
    Unparsed answers are not a class: they are errors against their true class. Labels absent from
    both (common with --limit) are left out so they do not add a 0/0 = 0 to the macro average."""
    present = set(y_true) | {p for p in y_pred if p is not None}
    return [label for label in labels if label in present]


def classification_metrics(y_true: list[str], y_pred: list[str | None], labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    used = classification_labels_used(y_true, y_pred, labels)
    # sklearn wants one type: an unparsed answer becomes a string no label can equal.
    pred = [p if p is not None else "\x00unparsed" for p in y_pred]
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1_weighted": float(f1_score(y_true, pred, labels=used, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, pred, labels=used, average="macro", zero_division=0)),
        "unparsed": sum(p is None for p in y_pred),
    }


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, average: str) -> np.ndarray:
    """Vectorised F1 over resamples: arrays shaped (resamples, labels). Same definition as sklearn
    with zero_division=0 (tests check equality on random data)."""
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)
    if average == "macro":
        return f1.mean(axis=1)
    support = tp + fn
    total = support.sum(axis=1)
    weighted = (f1 * support).sum(axis=1)
    return np.divide(weighted, total, out=np.zeros_like(weighted, dtype=float), where=total > 0)


def resample_indices(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(samples: np.ndarray) -> list[float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return [float(low), float(high)]


def bootstrap_mean(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% percentile interval of the mean of per-row values (accuracy, ROUGE)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return [float("nan"), float("nan")]
    idx = resample_indices(arr.size, resamples, seed)
    return _interval(arr[idx].mean(axis=1))


def bootstrap_classification_samples(
    y_true: list[str], y_pred: list[str | None], labels: list[str],
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> dict[str, np.ndarray]:
    """accuracy / weighted F1 / macro F1 of every resample (vectorised; tests compare each with
    sklearn on the same resample). Each resample averages over the labels present in it, as the
    point estimate does on the full set."""
    n = len(y_true)
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    t = np.array([index[y] for y in y_true])
    p = np.array([index.get(y, -1) if y is not None else -1 for y in y_pred])  # -1: unparsed
    idx = resample_indices(n, resamples, seed)
    tr, pr = t[idx], p[idx]
    onehot_t = tr[..., None] == np.arange(k)  # (resamples, n, labels)
    onehot_p = pr[..., None] == np.arange(k)
    tp = (onehot_t & onehot_p).sum(axis=1).astype(float)
    fp = (~onehot_t & onehot_p).sum(axis=1).astype(float)
    fn = (onehot_t & ~onehot_p).sum(axis=1).astype(float)
    present = (onehot_t | onehot_p).any(axis=1)  # the labels each resample averages over
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    n_present = present.sum(axis=1)
    return {
        "accuracy": (tr == pr).mean(axis=1),
        "f1_weighted": _f1_from_counts(tp, fp, fn, "weighted"),
        "f1_macro": np.divide((f1 * present).sum(axis=1), n_present, out=np.zeros(len(idx)), where=n_present > 0),
    }


def bootstrap_classification(y_true: list[str], y_pred: list[str | None], labels: list[str],
                             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    if not y_true:
        return {}
    samples = bootstrap_classification_samples(y_true, y_pred, labels, resamples, seed)
    return {name: _interval(values) for name, values in samples.items()}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_rows(outputs: list[str], targets: list[str]) -> list[dict[str, float]]:
    from rouge_score import rouge_scorer  # local computation; the package needs no network

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = []
    for out, tgt in zip(outputs, targets, strict=True):
        s = scorer.score(tgt, out)
        rows.append({k: float(s[k].fmeasure) for k in ROUGE_TYPES})
    return rows


# ---------------------------------------------------------------- one scorer per task kind (eval/kinds.py)
# Each returns (metrics, per-row details). metrics: {"n", <metric>: value, ..., "ci": {<metric>: [low, high]}};
# the per-row details carry the parsed answer and correctness, which the predictions files store.


def score_classification(outputs: list[str], targets: list[str], labels: list[str] | None,
                         with_intervals: bool = True) -> tuple[dict, list[dict]]:
    if not labels:
        raise ValueError("classification needs a label set")
    metrics: dict = {"n": len(outputs)}
    y_true = [t.strip().lower() for t in targets]
    y_pred = [parse_label(first_answer_line(o), labels) for o in outputs]
    rows = [{"parsed": p, "correct": p == t} for p, t in zip(y_pred, y_true, strict=True)]
    if outputs:
        metrics.update(classification_metrics(y_true, y_pred, labels))
        if with_intervals:
            metrics["ci"] = bootstrap_classification(y_true, y_pred, labels)
    return metrics, rows


def score_numeric(outputs: list[str], targets: list[str], labels: list[str] | None = None,
                  with_intervals: bool = True) -> tuple[dict, list[dict]]:
    metrics: dict = {"n": len(outputs)}
    rows = []
    for o, t in zip(outputs, targets, strict=True):
        parsed = parse_number(first_answer_line(o))
        rows.append({
            "parsed": None if parsed is None else str(parsed[0]) + ("%" if parsed[1] else ""),
            "correct": numeric_correct(first_answer_line(o), _target_number(t)),
        })
    return _accuracy_of_rows(metrics, rows, with_intervals), rows


def _accuracy_of_rows(metrics: dict, rows: list[dict], with_intervals: bool) -> dict:
    """Accuracy, unparsed count and its interval from per-row {parsed, correct} (numeric and exact kinds)."""
    if rows:
        correct = [float(r["correct"]) for r in rows]
        metrics["accuracy"] = float(np.mean(correct))
        metrics["unparsed"] = sum(r["parsed"] is None for r in rows)
        if with_intervals:
            metrics["ci"] = {"accuracy": bootstrap_mean(correct)}
    return metrics


def score_text(outputs: list[str], targets: list[str], labels: list[str] | None = None,
               with_intervals: bool = True) -> tuple[dict, list[dict]]:
    metrics: dict = {"n": len(outputs)}
    per = rouge_rows([o.strip() for o in outputs], targets)
    rows = [{"parsed": None, "correct": None, **r} for r in per]
    if outputs:
        for k in ROUGE_TYPES:
            metrics[k] = float(np.mean([r[k] for r in per]))
        if with_intervals:
            metrics["ci"] = {k: bootstrap_mean([r[k] for r in per]) for k in ROUGE_TYPES}
    return metrics, rows


def score_entities(outputs: list[str], targets: list[str], labels: list[str] | None,
                   with_intervals: bool = True) -> tuple[dict, list[dict]]:
    """Per comma-separated entity, as FinLoRA scores FiNER/FNXL, with the classification rule per entity.
    A blank piece (padding, or ",,") is the blank label when the targets have one, else unparsed.
    Intervals resample entities, not rows (an approximation: entities of one row are not independent)."""
    if not labels:
        raise ValueError("entity scoring needs a label set")
    flat_out, flat_true, counts = process_batched([first_answer_line(o) for o in outputs],
                                                  [t.strip().lower() for t in targets])
    named = [label for label in labels if label.strip()]
    blank = "" if "" in labels else None
    y_pred = [parse_label(piece, named) if piece.strip() else blank for piece in flat_out]
    per_entity = [{"parsed": p, "correct": p == t} for p, t in zip(y_pred, flat_true, strict=True)]
    metrics: dict = {"n": len(outputs), "entities": len(flat_true)}
    if outputs:
        metrics.update(classification_metrics(flat_true, y_pred, labels))
        if with_intervals:
            metrics["ci"] = bootstrap_classification(flat_true, y_pred, labels)
    return metrics, fold_rows(per_entity, counts)


def exact_key(text: str) -> str:
    """What exact matching compares: no whitespace, case folded ("A / B" == "a/b")."""
    return "".join(text.split()).casefold()


def score_exact(outputs: list[str], targets: list[str], labels: list[str] | None = None,
                with_intervals: bool = True) -> tuple[dict, list[dict]]:
    metrics: dict = {"n": len(outputs)}
    rows = []
    for o, t in zip(outputs, targets, strict=True):
        answer = first_answer_line(o).strip()
        rows.append({"parsed": answer or None, "correct": exact_key(answer) == exact_key(t)})
    return _accuracy_of_rows(metrics, rows, with_intervals), rows
