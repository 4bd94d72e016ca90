"""eval/tasks.py: the task registry (pydantic-validated, one-line errors) and test-data loading (fast).

    .venv/bin/python -m pytest tests/eval/test_tasks.py -q
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from eval.kinds import KINDS
from eval.tasks import for_scoring, load_registry, load_task_data, parse_task_names, runnable_tasks, select_tasks
from lora.core.errors import UserError

MINI = {"data": "mini.jsonl", "kind": "classification", "labels": ["negative", "positive"]}


def write_registry(tmp_path: Path, tasks: dict | str | bytes, data: str | None = None) -> Path:
    reg = tmp_path / "tasks.json"
    if isinstance(tasks, bytes):
        reg.write_bytes(tasks)
    else:
        reg.write_text(tasks if isinstance(tasks, str) else json.dumps(tasks))
    if data is not None:
        (tmp_path / "mini.jsonl").write_text(data)
    return reg


def registry_error(path) -> str:
    with pytest.raises(UserError) as info:
        load_registry(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_shipped_registry_labels_and_data_agree():
    registry = load_registry()
    shipped = [name for name, task in registry.items() if task.data.is_file()]
    assert shipped == ["fpb", "fiqa", "tfns", "tfns_source_labels", "nwgi", "ner", "financebench", "xbrl_term", "formula"]
    for name in shipped:
        task = registry[name]
        data = load_task_data(task)  # raises on any malformed line / off-label target
        assert data.rows and task.headline in task.kind.metrics
    assert len(load_task_data(registry["nwgi"]).rows) == 4047 and len(load_task_data(registry["fiqa"]).rows) == 235


def test_defaults_come_from_the_kind(tmp_path):
    reg = write_registry(tmp_path, {"_comment": "comments are skipped", "t": {"data": "x.jsonl", "kind": "text"},
                                    "n": {"data": "x.jsonl", "kind": "numeric", "max_new_tokens": 5}})
    tasks = load_registry(reg)
    assert list(tasks) == ["t", "n"]
    assert tasks["t"].kind is KINDS["text"] and tasks["t"].headline == "rougeL" and tasks["t"].max_new_tokens == 128
    assert tasks["n"].max_new_tokens == 5 and tasks["n"].headline == "accuracy"
    assert tasks["t"].data == (tmp_path / "x.jsonl").resolve()  # relative to the registry's folder


@pytest.mark.parametrize("entry,needles", [
    ({**MINI, "kind": "vibes"}, ["task 'mini'", "'kind'", "must be one of classification, entities, numeric, exact, text"]),
    ({**MINI, "kind": "clasification"}, ["did you mean 'classification'"]),
    ({**MINI, "lables": ["a"]}, ["task 'mini'", "unknown key 'lables'", "did you mean 'labels'"]),
    ({**MINI, "max_new_token": 3}, ["unknown key 'max_new_token'", "did you mean 'max_new_tokens'"]),
    ({"kind": "text"}, ["missing required key 'data'"]),
    ({**MINI, "max_new_tokens": 0}, ["'max_new_tokens'"]),
    ({**MINI, "max_new_tokens": "8"}, ["'max_new_tokens'"]),  # no silent "8" -> 8
    ({**MINI, "max_new_tokens": True}, ["'max_new_tokens'"]),
    ({**MINI, "labels": []}, ["'labels'"]),
    ({**MINI, "labels": ["a", " "]}, ["'labels'", "non-blank"]),
    ({"data": "x.jsonl", "kind": "numeric", "labels": ["a"]}, ["'labels'", "not numeric"]),
    ({**MINI, "headline": "rougeL"}, ["'headline'", "accuracy, f1_weighted, f1_macro"]),
    ({**MINI, "prompt_format": "chatm"}, ["'prompt_format'", "did you mean 'chatml'"]),
    ({**MINI, "data": 3}, ["'data'"]),
    ("not an object", ["entry must be an object"]),
])
def test_bad_entries_name_file_task_and_key(tmp_path, entry, needles):
    message = registry_error(write_registry(tmp_path, {"mini": entry}))
    assert str(tmp_path / "tasks.json") in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a..b", "-x", ".hidden", "x" * 101, "tab\tname", ""])
def test_task_names_must_be_safe_file_names(tmp_path, name):
    assert "not a safe identifier" in registry_error(write_registry(tmp_path, {name: MINI}))


def test_safe_names_pass(tmp_path):
    assert list(load_registry(write_registry(tmp_path, {"fpb.v2-small_1": MINI}))) == ["fpb.v2-small_1"]


@pytest.mark.parametrize("content,needle", [
    (b"{\xff}", "not UTF-8"),
    ('{"t": {"data": "x", "kind": "text", "max_new_tokens": ' + "9" * 5000 + "}}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"t": {"data": "x\x00", "kind": "text"}}', "not valid JSON"),  # raw control character
    ("{broken", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ("{}", "no tasks defined"),
    ('{"t": {"data": "x", "kind": "text"}, "t": {"data": "y", "kind": "text"}}', "duplicate key 't'"),
])
def test_hostile_registry_files(tmp_path, content, needle):
    assert needle in registry_error(write_registry(tmp_path, content.encode() if isinstance(content, str) else content))


def test_registry_path_problems(tmp_path):
    assert "not a file" in registry_error(tmp_path)  # a directory
    assert "not found" in registry_error(tmp_path / "missing.json")
    assert "nosuchuser" in registry_error("~nosuchuser_eval/tasks.json")
    assert "File name too long" in registry_error(tmp_path / ("x" * 300))
    assert "null" in registry_error(str(tmp_path / "a\x00b"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_registry(tmp_path):
    reg = write_registry(tmp_path, {"mini": MINI})
    reg.chmod(0)
    assert "cannot be read" in registry_error(reg)


def test_data_file_hostile_paths(tmp_path):
    for data, needle in [("missing.jsonl", "not found"), (".", "not a file"), ("~nosuchuser_eval/d.jsonl", "nosuchuser")]:
        with pytest.raises(UserError, match=needle):
            load_task_data(load_registry(write_registry(tmp_path, {"mini": {**MINI, "data": data}}))["mini"])


@pytest.mark.parametrize("data,needle", [
    ('{"context": "c", "target": "negative"}\n{"context": "c"\n', ":2:"),
    ('{"context": "c", "target": "negative"}\n{"context": "c", "target": "meh"}\n', "'meh' is not one of the labels"),
    ('{"context": "c", "target": "\\ud800"}\n', "lone surrogate"),
    (b'{"context": "c", "target": "\xff"}\n', "not UTF-8"),
    ("", "has no rows"),
])
def test_malformed_task_data(tmp_path, data, needle):
    reg = write_registry(tmp_path, {"mini": MINI})
    (tmp_path / "mini.jsonl").write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(UserError, match=needle):
        load_task_data(load_registry(reg)["mini"])


def test_numeric_targets_must_be_numbers(tmp_path):
    reg = write_registry(tmp_path, {"n": {"data": "mini.jsonl", "kind": "numeric"}},
                         data='{"context": "c", "target": "12.5"}\n{"context": "c", "target": "twelve"}\n')
    with pytest.raises(UserError, match=r"mini.jsonl:2: target 'twelve' is not a number"):
        load_task_data(load_registry(reg)["n"])


def test_labels_derived_from_data_when_absent(tmp_path):
    reg = write_registry(tmp_path, {"c": {"data": "mini.jsonl", "kind": "classification"}},
                         data='{"context": "c", "target": " Yes"}\n{"context": "c", "target": "no"}\n')
    data = load_task_data(load_registry(reg)["c"])
    assert data.labels == ("no", "yes") and [r["target"] for r in data.rows] == ["yes", "no"]
    assert data.head(1).rows == data.rows[:1] and data.head(1).sha256 == data.sha256


def test_task_selection():
    registry = load_registry()
    assert parse_task_names(None) is None
    assert select_tasks(registry, None) == list(registry.values())
    assert [t.name for t in select_tasks(registry, parse_task_names(["fpb, ner", "fpb"]))] == ["fpb", "ner"]
    with pytest.raises(UserError, match="names no task"):
        parse_task_names([","])
    with pytest.raises(UserError, match="names no task"):
        parse_task_names([" ", ""])
    with pytest.raises(UserError, match="unknown task fbp; did you mean 'fpb'"):
        select_tasks(registry, ["fbp"])


def test_missing_data_named_or_skipped():
    registry = load_registry()
    run, skipped = runnable_tasks(registry, None)
    assert [t.name for t in run] == [n for n, t in registry.items() if t.data.is_file()]
    assert "headline" in [t.name for t in skipped] and not set(run) & set(skipped)
    with pytest.raises(UserError, match=r"task headline: test file data/test/headline_test.jsonl not found"):
        runnable_tasks(registry, ["fpb", "headline"])


def test_headline_follows_the_encoder():
    registry = load_registry()
    term = registry["xbrl_term"]
    assert for_scoring(term, "standard", None).headline == "rougeL"
    assert for_scoring(term, "standard", "/enc").headline == "bertscore_f1"
    assert for_scoring(registry["fpb"], "standard", "/enc") is registry["fpb"]
    pinned = replace(term, spec={**term.spec, "headline": "rouge1"}, headline="rouge1")
    assert for_scoring(pinned, "standard", "/enc").headline == "rouge1"  # an explicit headline wins
    fin = for_scoring(term, "finlora", "/enc")
    assert (fin.kind.name, fin.headline, fin.max_new_tokens, fin.prompt_format) == ("finlora_bertscore", "bertscore_f1", 50, "raw")


def test_relabel_rescores_the_file_as_its_source_means(tmp_path):
    data = '{"context": "a", "target": "positive"}\n{"context": "b", "target": "Neutral"}\n{"context": "c", "target": "negative"}\n'
    reg = write_registry(tmp_path, {"t": {**MINI, "labels": ["negative", "neutral", "positive"],
                                          "relabel": {"positive": "neutral", "neutral": "positive"}}}, data)
    task = load_registry(reg)["t"]
    assert [r["target"] for r in load_task_data(task).rows] == ["neutral", "positive", "negative"]


def test_shipped_tfns_source_labels_swaps_positive_and_neutral():
    registry = load_registry()
    as_written = [r["target"] for r in load_task_data(registry["tfns"]).rows]
    as_scored = [r["target"] for r in load_task_data(registry["tfns_source_labels"]).rows]
    swap = {"positive": "neutral", "neutral": "positive", "negative": "negative"}
    assert as_scored == [swap[t] for t in as_written]
    # pinned: as scored, neutral is the largest class (FinLoRA's file as written says positive)
    assert (as_scored.count("negative"), as_scored.count("positive"), as_scored.count("neutral")) == (347, 475, 1566)


@pytest.mark.parametrize("entry, needle", [
    ({**MINI, "kind": "text", "labels": None, "relabel": {"a": "b"}}, "key 'relabel': relabelling only applies to a kind with labels"),
    ({**MINI, "relabel": {"positive": "neutral"}}, "key 'relabel': 'neutral' is not one of the task's labels"),
    ({**MINI, "relabel": {}}, "key 'relabel'"),
    ({**MINI, "relabel": {"positive": "negative"}, "finlora": {"scorer": "finlora_labels", "max_new_tokens": 10}},
     "FinLoRA scores the file as written"),
])
def test_bad_relabel(tmp_path, entry, needle):
    assert needle in registry_error(write_registry(tmp_path, {"t": entry}))
