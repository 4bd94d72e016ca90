"""Task kinds: everything that differs between classification, numeric and text tasks, in one object each.

    python -m eval --list-tasks        # every task names its kind; the kind decides the rest

A kind fixes: the metrics it reports and the default headline among them, the default answer budget
(max_new_tokens), whether generation stops at the newline after the answer, how a test-set target is
normalised and checked, where the label set comes from, and the scorer (eval/metrics.py). Adding a kind is
one more `Kind(...)` in KINDS; nothing else in eval/ branches on the kind's name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eval import metrics as M

Scorer = Callable[..., tuple[dict, list[dict]]]


@dataclass(frozen=True)
class Kind:
    name: str
    metrics: tuple[str, ...]  # in report order
    headline: str  # default headline metric; a task may pick another of `metrics`
    max_new_tokens: int  # default answer budget
    stop_at_newline: bool  # one-line answers: stop each row at the newline after its first text
    scorer: Scorer  # (outputs, targets, labels, with_intervals=...) -> (metrics, per-row details)
    has_labels: bool = False  # a label set (registry, else derived from the targets) scores the answers
    lower_targets: bool = False  # targets compared case-insensitively
    numeric_targets: bool = False  # every target must hold a number
    free_text: bool = False  # free-text answers: --bertscore-model adds BERTScore F1

    def normalize_target(self, raw: str) -> str:
        target = raw.strip()
        return target.lower() if self.lower_targets else target

    def target_problem(self, target: str, labels: tuple[str, ...] | None) -> str | None:
        """Why a normalised target cannot be scored, or None."""
        if self.has_labels and labels is not None and target not in labels:
            return f"is not one of the labels {', '.join(labels)}"
        if self.numeric_targets and M.parse_target_number(target) is None:
            return "is not a number"
        return None

    def derive_labels(self, targets: list[str]) -> tuple[str, ...] | None:
        """The label set when the registry gives none: the distinct targets (sorted, so stable)."""
        return tuple(sorted(set(targets))) if self.has_labels else None

    def score(self, outputs: list[str], targets: list[str], labels: list[str] | tuple[str, ...] | None = None,
              with_intervals: bool = True) -> tuple[dict, list[dict]]:
        return self.scorer(outputs, targets, list(labels) if labels else None, with_intervals=with_intervals)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("classification", ("accuracy", "f1_weighted", "f1_macro"), "accuracy", 8, True, M.score_classification,
         has_labels=True, lower_targets=True),
    Kind("numeric", ("accuracy",), "accuracy", 16, True, M.score_numeric, numeric_targets=True),
    Kind("text", M.ROUGE_TYPES, "rougeL", 128, False, M.score_text, free_text=True),
)}


def score_task(kind: str, outputs: list[str], targets: list[str], labels: list[str] | tuple[str, ...] | None = None,
               with_intervals: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, per-row details) of raw model outputs against targets, by the kind's name."""
    return KINDS[kind].score(outputs, targets, labels, with_intervals=with_intervals)
