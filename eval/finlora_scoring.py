"""`--scoring finlora`: FinLoRA's own harness rules (test/test_dataset.py + test/inference.py at commit 7e1cf82),
as pure functions. The kinds that use them are in eval/kinds.py (finlora_labels, finlora_entities,
finlora_bertscore); which task uses which, with FinLoRA's answer budget, is the `finlora` block of each
entry in eval/tasks.json.

    python -m eval lora_adapters/ --scoring finlora --tasks fpb,fiqa,tfns,nwgi

What FinLoRA does, and what each function here reproduces (docs/eval.md, "FinLoRA scoring"):
- the prompt is the row's raw `context`; the answer is the text after the LAST "Answer:" in
  decode(prompt + generation), stripped (`answer_after_last_cue`);
- targets are `str()` of what pandas.read_json made of the target column, so an all-numeric column comes
  back as floats/ints ("12.50" -> "12.5") (`pandas_like_targets`);
- labels are the set of the evaluated targets; the answer is lower-cased and the label found earliest
  in it must equal the lower-cased target (`earliest_label`);
- F1 is sklearn's weighted F1 of the targets against a response list that holds the target when the
  answer is right and the RAW answer when it is wrong (`finlora_label_scores`), so a wrong answer is a
  class of its own and almost never a false positive of a real class;
- FiNER / FNXL rows are split into entities first (`process_batched`);
- financebench / xbrl_term are scored by BERTScore (mean F1), not by labels.
"""
from __future__ import annotations

import math

from eval import metrics as M
from eval.bertscore import bertscore_prf
from lora.core.errors import did_you_mean

SCORING_MODES = ("standard", "finlora")
ANSWER_CUE = "Answer:"  # FinLoRA's inference(..., delimiter="Answer:")


def scoring_mode(value: str) -> str:
    """argparse type for --scoring: an unknown value is one line with close matches."""
    import argparse

    if value in SCORING_MODES:
        return value
    hint = did_you_mean(value, SCORING_MODES, n=2, cutoff=0.5)
    raise argparse.ArgumentTypeError(f"unknown scoring {value!r} (one of {', '.join(SCORING_MODES)}){hint}")


def answer_after_last_cue(prompt: str, output: str) -> str:
    """FinLoRA: decode(prompt+generation).split("Answer:")[-1].strip(). The decoded prompt is the prompt
    (byte-level BPE round-trips; special tokens are skipped), so the split runs on prompt + output. A
    prompt without the cue (and an output without it) gives the whole text back, prompt included, as in
    FinLoRA."""
    return (prompt + output).split(ANSWER_CUE)[-1].strip()


def pandas_like_targets(targets: list[str]) -> list[str]:
    """The targets as FinLoRA sees them: pd.read_json(lines=True) turns a target column in which every
    string parses as a float into float64, then into int64 when every value is integral, and FinLoRA
    then applies str(). So "15092.40" becomes "15092.4" and "6000000.0" becomes "6000000". One string
    that is not a number leaves the whole column as written (pandas' _try_convert_data)."""
    values: list[float] = []
    for t in targets:
        try:
            values.append(float(t))  # numpy's object->float64 cast uses Python's float()
        except ValueError:
            return list(targets)
    if not values:
        return []
    if all(math.isfinite(v) and v == int(v) and -2**63 <= v < 2**63 for v in values):
        return [str(int(v)) for v in values]
    return [repr(v) for v in values]  # str(np.float64) is the shortest round-trip repr, as Python's


def earliest_label(answer: str, labels: list[str] | tuple[str, ...]) -> str | None:
    """The lower-cased label whose first occurrence in the lower-cased answer starts earliest, or None.
    FinLoRA orders labels found at the same index by the iteration order of a Python set of strings,
    which changes from process to process (hash randomisation); here the longest wins, then the
    alphabetically first, so a label that contains another ("us-gaap:revenues..." vs "us-gaap:revenues",
    or any label vs the empty label) is read as the longer one every time."""
    return M.parse_label(answer, [label.lower() for label in labels])


def finlora_label_scores(answers: list[str], targets: list[str]) -> tuple[dict, list[dict]]:
    """FinLoRA's evaluate_accuracy + f1_score(average='weighted') on answers already extracted.

    Returns metrics {accuracy, f1_finlora (FinLoRA's printed F1), f1_weighted (sklearn weighted F1 of the
    targets against the parsed labels: what FinLoRA's F1 would be if a wrong answer counted against the
    class it names), unparsed} and one {parsed, correct} per answer."""
    from sklearn.metrics import f1_score

    if len(answers) != len(targets):
        raise ValueError("answers and targets must have the same length")
    labels = sorted(set(targets))  # FinLoRA: list(set(target_list)); order only matters on ties (above)
    rows, response, parsed_for_f1 = [], [], []
    for answer, target in zip(answers, targets, strict=True):
        parsed = earliest_label(answer, labels)
        correct = parsed is not None and parsed == target.lower()
        rows.append({"parsed": parsed, "correct": correct})
        response.append(target if correct else answer)
        parsed_for_f1.append(_original_case(parsed, labels) if parsed is not None else "\x00unparsed")
    metrics: dict = {"n": len(answers)}
    if answers:
        metrics["accuracy"] = sum(r["correct"] for r in rows) / len(rows)
        metrics["f1_finlora"] = float(f1_score(targets, response, average="weighted", zero_division=0))
        metrics["f1_weighted"] = float(f1_score(targets, parsed_for_f1, labels=labels, average="weighted",
                                                zero_division=0))
        metrics["unparsed"] = sum(r["parsed"] is None for r in rows)
    return metrics, rows


def _original_case(lowered: str, labels: list[str]) -> str:
    """A lower-cased label back as the target string it came from (first in sorted order when several
    targets differ only in case)."""
    return next(label for label in labels if label.lower() == lowered)


# ---------------------------------------------------------------- the scorers of the finlora_* kinds (eval/kinds.py)
# Same signature as eval/metrics.py's: (answers, targets, labels, with_intervals) -> (metrics, per-row details).
# `labels` is ignored: FinLoRA's label set is the set of the targets being scored.


def score_labels(answers: list[str], targets: list[str], labels: list[str] | None = None,
                 with_intervals: bool = True) -> tuple[dict, list[dict]]:
    metrics, rows = finlora_label_scores(answers, targets)
    if answers and with_intervals:  # ours, not FinLoRA's: the interval of the accuracy
        metrics["ci"] = {"accuracy": M.bootstrap_mean([float(r["correct"]) for r in rows])}
    return metrics, rows


def score_entities(answers: list[str], targets: list[str], labels: list[str] | None = None,
                   with_intervals: bool = True) -> tuple[dict, list[dict]]:
    """FiNER / FNXL: process_batched, then the label rules on the flattened entity lists (FinLoRA's
    accuracy and F1 are per entity; n stays the number of rows, `entities` counts the entities)."""
    flat_answers, flat_targets, counts = M.process_batched(answers, targets)
    metrics, per_entity = finlora_label_scores(flat_answers, flat_targets)
    metrics["n"], metrics["entities"] = len(answers), len(flat_targets)
    if answers and with_intervals:
        metrics["ci"] = {"accuracy": M.bootstrap_mean([float(d["correct"]) for d in per_entity])}
    return metrics, M.fold_rows(per_entity, counts)


def score_bertscore(answers: list[str], targets: list[str], labels: list[str] | None = None,
                    with_intervals: bool = True, encoder: str | None = None) -> tuple[dict, list[dict]]:
    """financebench / xbrl_term: mean BERTScore precision, recall and F1 of the answers against the targets
    (FinLoRA: evaluate's "bertscore" with model_type ProsusAI/finbert; here eval/bertscore.py on the local
    encoder folder given with --bertscore-model)."""
    if not encoder:
        raise ValueError("FinLoRA scores this task with BERTScore: an encoder folder is needed")
    metrics: dict = {"n": len(answers)}
    if not answers:
        return metrics, []

    prf = bertscore_prf(answers, targets, encoder)
    for i, name in enumerate(("bertscore_precision", "bertscore_recall", "bertscore_f1")):
        metrics[name] = sum(x[i] for x in prf) / len(prf)
    if with_intervals:
        metrics["ci"] = {"bertscore_f1": M.bootstrap_mean([x[2] for x in prf])}
    return metrics, [{"parsed": None, "correct": None, "bertscore_f1": x[2]} for x in prf]
