"""eval/shots.py: k-shot examples for the base row (pure planning; fast, no model).

    .venv/bin/python -m pytest tests/eval/test_shots.py -q
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from eval.shots import Pool, few_shot_context, plan_task, read_train
from eval.tasks import TaskData, load_registry, load_task_data
from lora.core.errors import UserError


def _data(n: int, contexts: list[str] | None = None) -> TaskData:
    task = load_registry()["tfns"]
    rows = [{"id": i, "context": (contexts or [f"c{j}" for j in range(n)])[i], "target": "neutral"} for i in range(n)]
    return TaskData(task=task, rows=rows, labels=("negative", "neutral", "positive"), sha256="d" * 64)


def _pool(n: int) -> Pool:
    return Pool("train", "train.jsonl", "t" * 64, tuple({"id": i, "context": f"t{i}", "target": f"y{i}"} for i in range(n)))


def test_prompt_is_finloras_few_shot_format():
    got = few_shot_context("Q?", [{"context": "a", "target": "x"}, {"context": "b", "target": "y"}])
    assert got == "Example 1:\nInput: a\nAnswer: x\n\nExample 2:\nInput: b\nAnswer: y\n\nInput: Q?\nAnswer:"


def test_train_pool_examples_are_per_row_seeded_and_independent_of_limit():
    data = _data(10)
    plan, scored = plan_task(data, _pool(50), k=3, seed=0, limit=None)
    assert [r["id"] for r in scored.rows] == list(range(10)) and plan.held_out == ()
    assert all(len(set(ex)) == 3 for ex in plan.per_row.values())
    assert len({plan.per_row[i] for i in range(10)}) > 1  # rows get different examples (FinLoRA samples per row)
    again, _ = plan_task(data, _pool(50), k=3, seed=0, limit=None)
    assert again.per_row == plan.per_row  # the seed fixes them
    limited, scored = plan_task(data, _pool(50), k=3, seed=0, limit=4)
    assert len(scored.rows) == 4 and limited.per_row == {i: plan.per_row[i] for i in range(4)}
    other, _ = plan_task(data, _pool(50), k=3, seed=1, limit=None)
    assert other.per_row != plan.per_row and other.fingerprint() != plan.fingerprint()
    assert plan_task(data, _pool(50), k=2, seed=0, limit=None)[0].fingerprint() != plan.fingerprint()
    row = data.rows[0]
    a, b, c = plan.per_row[0]
    assert plan.context(row) == f"Example 1:\nInput: t{a}\nAnswer: y{a}\n\nExample 2:\nInput: t{b}\nAnswer: y{b}\n\n" \
                                f"Example 3:\nInput: t{c}\nAnswer: y{c}\n\nInput: c0\nAnswer:"


def test_an_example_with_the_rows_own_context_is_never_chosen():
    data = _data(3, ["t0", "t1 ", "zz"])  # rows 0 and 1 repeat train contexts (after strip)
    pool = _pool(4)
    for seed in range(20):
        plan, _ = plan_task(data, pool, k=3, seed=seed, limit=None)
        assert 0 not in plan.per_row[0] and 1 not in plan.per_row[1]
    with pytest.raises(UserError, match=r"task tfns test row 0 has only 3 usable examples"):
        plan_task(data, pool, k=4, seed=0, limit=None)


def test_without_train_file_test_rows_are_held_out_of_scoring():
    data = _data(8)
    plan, scored = plan_task(data, None, k=3, seed=0, limit=None)
    assert len(plan.held_out) == 3 and plan.pool.source == "test"
    assert [r["id"] for r in plan.pool.rows] == list(plan.held_out)
    assert [r["id"] for r in scored.rows] == [i for i in range(8) if i not in plan.held_out]
    assert all(set(ex) == set(plan.held_out) for ex in plan.per_row.values())
    assert scored.sha256 == data.sha256 and scored.labels == data.labels
    _, limited = plan_task(data, None, k=3, seed=0, limit=2)
    assert [r["id"] for r in limited.rows] == [r["id"] for r in scored.rows][:2]  # held out first, then --limit
    assert plan.facts()["held_out_ids"] == list(plan.held_out)


def test_test_rows_repeating_a_held_out_context_are_not_scored():
    # ner's test file repeats contexts: a scored row must not find its own input among the examples
    data = _data(8, ["same", "same", "same", "same", "same", "same", "same", "same"])
    with pytest.raises(UserError, match=r"^--shots 2: task tfns has no test row left to score \(its 2 held-out "
                                        r"examples and 6 rows repeating them"):
        plan_task(data, None, k=2, seed=0, limit=None)
    data = _data(6, ["a", "b", "a", "c", "d", "e"])
    for seed in range(10):
        plan, scored = plan_task(data, None, k=1, seed=seed, limit=None)
        kept = {r["context"] for r in scored.rows}
        assert plan.pool.rows[0]["context"] not in kept and len(scored.rows) == 6 - 1 - len(plan.duplicates)


def test_too_many_shots_names_the_task_and_the_count():
    with pytest.raises(UserError, match=r"^--shots 6: task tfns has no train file and 6 test row\(s\)"):
        plan_task(_data(6), None, k=6, seed=0, limit=None)
    assert plan_task(_data(6), None, k=5, seed=0, limit=None)[1].rows  # one left to score
    with pytest.raises(UserError, match=r"^--shots 5: task tfns has only 4 examples in its train file train.jsonl$"):
        plan_task(_data(6), _pool(4), k=5, seed=0, limit=None)


def test_read_train_uses_the_registrys_train_file(tmp_path):
    registry = load_registry()
    fpb = read_train(registry["fpb"])
    assert fpb is not None and fpb.source == "train" and fpb.path == "data/train/fpb_train.jsonl"
    assert len(fpb.rows) == sum(1 for line in Path(registry["fpb"].train).read_text().splitlines() if line.strip())
    assert read_train(replace(registry["fpb"], train=None)) is None  # no train file named
    assert read_train(replace(registry["fpb"], train=tmp_path / "absent.jsonl")) is None  # named but absent
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "c", "target": "t"}) + "\n{broken\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2:"):
        read_train(replace(registry["fpb"], train=bad))


def test_real_task_plan_is_pinned():
    # the seed's contract (docs/eval.md): (seed, task, row id) -> the same train lines on every machine and
    # version; a change here changes published 3-shot numbers, so it must be deliberate
    data = load_task_data(load_registry()["fpb"])
    plan, scored = plan_task(data, read_train(data.task), k=3, seed=0, limit=3)
    assert len(scored.rows) == 3
    assert plan.per_row == {0: (1764, 195, 2342), 1: (1585, 1444, 2049), 2: (3415, 2854, 1177)}


def test_a_relabelled_tasks_examples_show_the_labels_it_scores(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"context": c, "target": t}) + "\n"
                             for c, t in [("a", "positive"), ("b", "Neutral"), ("c", "negative")]))
    task = replace(load_registry()["tfns_source_labels"], train=train)
    assert [r["target"] for r in read_train(task).rows] == ["neutral", "positive", "negative"]
    assert [r["target"] for r in read_train(replace(task, relabel=())).rows] == ["positive", "Neutral", "negative"]
