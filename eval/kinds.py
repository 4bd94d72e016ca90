"""Task kinds: everything that differs between classification, entity, numeric, exact and text tasks (and
FinLoRA's own scoring rules), in one object each.

    python -m eval --list-tasks        # every task names its kind; the kind decides the rest

A kind fixes: the metrics it reports and the default headline among them, the default answer budget
(max_new_tokens), whether generation stops at the newline after the answer, which part of the generation is
the answer, how a test-set target is normalised and checked, where the label set comes from, and the
scorer (eval/metrics.py, eval/finlora_scoring.py). Adding a kind is one more `Kind(...)` in KINDS; nothing
else in eval/ branches on the kind's name.

The finlora_* kinds are what `--scoring finlora` swaps in (eval/tasks.py::for_scoring, picked by each
task's `finlora` block); they can also be named as a task's kind.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eval import finlora_scoring as F
from eval import metrics as M

Scorer = Callable[..., tuple[dict, list[dict]]]


def _whole(target: str) -> list[str]:
    return [target]


@dataclass(frozen=True)
class Kind:
    name: str
    metrics: tuple[str, ...]  # in report order
    headline: str  # default headline metric; a task may pick another of `metrics`
    max_new_tokens: int  # default answer budget
    stop_at_newline: bool  # one-line answers: stop each row at the newline after its first text
    scorer: Scorer  # (answers, targets, labels, with_intervals=...[, encoder=...]) -> (metrics, per-row details)
    has_labels: bool = False  # a label set (registry, else derived from the targets) scores the answers
    lower_targets: bool = False  # targets compared case-insensitively
    numeric_targets: bool = False  # every target must hold a number
    free_text: bool = False  # free-text answers: --bertscore-model adds BERTScore F1 (and becomes the headline)
    label_units: Callable[[str], list[str]] = _whole  # the labelled units of one target (entities: the pieces)
    strip_targets: bool = True  # FinLoRA compares targets as written
    targets_rule: Callable[[list[str]], list[str]] | None = None  # a rewrite of the whole target column
    extract: Callable[[str, str], str] | None = None  # (prompt, generation) -> the answer; None: the generation
    needs_encoder: bool = False  # the scorer itself needs --bertscore-model (it gets encoder=...)

    def normalize_target(self, raw: str) -> str:
        target = raw.strip() if self.strip_targets else raw
        return target.lower() if self.lower_targets else target

    def normalize_targets(self, raws: list[str]) -> list[str]:
        column = self.targets_rule(raws) if self.targets_rule else raws
        return [self.normalize_target(t) for t in column]

    def target_problem(self, target: str, labels: tuple[str, ...] | None) -> str | None:
        """Why a normalised target cannot be scored, or None."""
        if self.has_labels and labels is not None:
            off = [u for u in self.label_units(target) if u not in labels]
            if off:
                return f"is not one of the labels {', '.join(labels)}" if off == [target] else \
                    f"has {off[0]!r}, which is not one of the labels {', '.join(labels)}"
        if self.numeric_targets and M.parse_target_number(target) is None:
            return "is not a number"
        return None

    def derive_labels(self, targets: list[str]) -> tuple[str, ...] | None:
        """The label set when the registry gives none: the distinct units of the targets (sorted, so stable)."""
        return tuple(sorted({u for t in targets for u in self.label_units(t)})) if self.has_labels else None

    def answer(self, prompt: str, generation: str) -> str:
        return self.extract(prompt, generation) if self.extract else generation

    def score(self, outputs: list[str], targets: list[str], labels: list[str] | tuple[str, ...] | None = None,
              with_intervals: bool = True, encoder: str | None = None) -> tuple[dict, list[dict]]:
        extra = {"encoder": encoder} if self.needs_encoder else {}
        return self.scorer(outputs, targets, list(labels) if labels else None, with_intervals=with_intervals, **extra)


_FINLORA = {"stop_at_newline": False, "strip_targets": False, "targets_rule": F.pandas_like_targets,
            "extract": F.answer_after_last_cue}  # FinLoRA generates the whole budget and reads after "Answer:"

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("classification", ("accuracy", "f1_weighted", "f1_macro"), "accuracy", 8, True, M.score_classification,
         has_labels=True, lower_targets=True),
    Kind("entities", ("accuracy", "f1_weighted", "f1_macro"), "accuracy", 100, True, M.score_entities,
         has_labels=True, lower_targets=True, label_units=M.split_entities),
    Kind("numeric", ("accuracy",), "accuracy", 16, True, M.score_numeric, numeric_targets=True),
    Kind("exact", ("accuracy",), "accuracy", 32, True, M.score_exact),
    Kind("text", M.ROUGE_TYPES, "rougeL", 128, False, M.score_text, free_text=True),
    Kind("finlora_labels", ("accuracy", "f1_finlora", "f1_weighted"), "accuracy", 30, scorer=F.score_labels,
         **_FINLORA),
    Kind("finlora_entities", ("accuracy", "f1_finlora", "f1_weighted"), "accuracy", 100, scorer=F.score_entities,
         **_FINLORA),
    Kind("finlora_bertscore", ("bertscore_f1", "bertscore_precision", "bertscore_recall"), "bertscore_f1", 50,
         scorer=F.score_bertscore, needs_encoder=True, **_FINLORA),
)}
FINLORA_KINDS = tuple(k for k in KINDS if k.startswith("finlora_"))  # what a task's `finlora.scorer` may name
ENCODER_HEADLINE = "bertscore_f1"  # a free-text task's default headline when --bertscore-model is given


def score_task(kind: str, outputs: list[str], targets: list[str], labels: list[str] | tuple[str, ...] | None = None,
               with_intervals: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, per-row details) of raw model outputs against targets, by the kind's name."""
    return KINDS[kind].score(outputs, targets, labels, with_intervals=with_intervals)
