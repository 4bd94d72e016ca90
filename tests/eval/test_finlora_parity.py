"""`--scoring finlora` against FinLoRA's own harness code, not against our reading of it.

data/finlora/test_dataset.py is FinLoRA's test/test_dataset.py (commit 7e1cf82), unchanged. Importing it
needs torch, `evaluate` and FinLoRA's `inference` module (API clients), so the pure parts are taken out of
its syntax tree: the task -> file map, the answer budgets, evaluate_accuracy and process_batched. Every
check compares our scorer with FinLoRA's functions on the same inputs.
"""
from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from eval import finlora_scoring as F
from eval.tasks import load_registry

HARNESS = Path(__file__).resolve().parents[2] / "data" / "finlora" / "test_dataset.py"


def _harness() -> dict:
    tree = ast.parse(HARNESS.read_text(encoding="utf-8"))
    found: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "max_new_token_dict":
                found[name] = ast.literal_eval(node.value)
            elif name == "dataset_path":  # {task: os.path.join(DATA_DIR, "<file>")}
                found[name] = {ast.literal_eval(k): ast.literal_eval(v.args[-1])
                               for k, v in zip(node.value.keys, node.value.values, strict=True)}
        elif isinstance(node, ast.FunctionDef) and node.name in ("evaluate_accuracy", "process_batched"):
            namespace: dict = {}
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(HARNESS), "exec"), namespace)  # noqa: S102
            found[node.name] = namespace[node.name]
    return found


FINLORA = _harness()


def finlora_scores(answers: list[str], targets: list[str], entities: bool = False) -> tuple[float, float]:
    """What FinLoRA's test_fin_tasks prints for extracted answers: accuracy and weighted F1."""
    if entities:
        answers, targets = FINLORA["process_batched"](answers, targets)
    acc, response = FINLORA["evaluate_accuracy"](answers, targets, list(set(targets)))
    return acc, f1_score(targets, response, average="weighted")


def test_the_registry_is_finloras_benchmark_with_its_files_and_budgets():
    registry = load_registry()
    views = {n: t for n, t in registry.items() if t.relabel}  # tfns_source_labels: a FinLoRA file, re-scored
    assert set(registry) - set(views) == set(FINLORA["dataset_path"])
    assert views and all(t.data == registry[n.removesuffix("_source_labels")].data for n, t in views.items())
    for name, file in FINLORA["dataset_path"].items():
        task = registry[name]
        budget = FINLORA["max_new_token_dict"].get(name, 30)  # test_fin_tasks: .get(data_name, 30)
        assert task.data.name == file and task.finlora is not None, name
        assert task.finlora.max_new_tokens == budget and task.max_new_tokens == budget, name


# Answers a model gives: the label in several spellings, two labels (the earliest counts), none, noise.
def _answer(rng: random.Random, labels: list[str]) -> str:
    a, b = rng.choice(labels), rng.choice(labels)
    return rng.choice([
        a, a.upper(), a.capitalize() + ".", f"The sentiment is {a}.", f"{a} or maybe {b}", f"not {b}, {a}",
        "I cannot tell", "", f"  {a}\n\nExplanation: {b}", f"{a}{b}",
    ])


@pytest.mark.parametrize("labels", [
    ["negative", "neutral", "positive"],
    ["strong negative", "moderately negative", "mildly negative", "neutral", "mildly positive",
     "moderately positive", "strong positive"],  # nwgi: "negative" inside "strong negative" is not a label
    ["location", "organization", "person"],
])
def test_label_scoring_matches_finlora_evaluate_accuracy_and_f1(labels):
    rng = random.Random(7)
    for trial in range(40):
        targets = [rng.choice(labels) for _ in range(rng.randint(1, 30))]
        answers = [_answer(rng, labels) for _ in targets]
        ours, _ = F.finlora_label_scores(answers, targets)
        acc, f1 = finlora_scores(answers, targets)
        assert ours["accuracy"] == pytest.approx(acc), (trial, answers, targets)
        assert ours["f1_finlora"] == pytest.approx(f1), (trial, answers, targets)


def test_entity_scoring_matches_finlora_process_batched():
    tags = ["EntityCommonStockSharesOutstanding", "DebtInstrumentFaceAmount", "Revenues", "O"]
    rng = random.Random(11)
    for trial in range(40):
        targets = [", ".join(rng.choice(tags) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 12))]
        answers = [", ".join(rng.choice(tags + ["revenues", "Unknown"]) for _ in range(rng.randint(0, 8)))
                   for _ in targets]
        ours, _ = F.score_entities(answers, targets, with_intervals=False)
        acc, f1 = finlora_scores(answers, targets, entities=True)
        assert ours["accuracy"] == pytest.approx(acc), (trial, answers, targets)
        assert ours["f1_finlora"] == pytest.approx(f1), (trial, answers, targets)
