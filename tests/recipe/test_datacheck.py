"""Dataset checks run before anything is written: file and line number in one line, exit 2."""
from __future__ import annotations

import pytest

from lora.cli.shims import finetune_main as main
from tests.conftest import cpu_entry


def run_with_dataset(capsys, workspace, path, *flags):
    workspace.write({"run": cpu_entry(dataset_path=str(path))})
    code = main(workspace.argv("run", *flags))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.jsonl", "", "is empty"),
        ("blank.jsonl", "\n\n", "is empty"),
        ("broken.jsonl", '{"context": "a", "target": "b"}\n{"context": "a", "target"\n', "broken.jsonl:2: not a JSON object"),
        ("notarget.jsonl", '{"context": "a", "target": "b"}\n\n{"context": "a"}\n', "notarget.jsonl:3: row has no 'target'"),
        ("nocontext.jsonl", '{"text": "a", "target": "b"}\n', "nocontext.jsonl:1: row has no 'context'"),
        ("list.jsonl", '[1, 2]\n', "list.jsonl:1: expected an object"),
        ("emptytarget.jsonl", '{"context": "a", "target": "  "}\n', "emptytarget.jsonl:1: empty 'target'"),
        ("numtarget.jsonl", '{"context": "a", "target": 3}\n', "numtarget.jsonl:1: 'target' must be a string"),
        ("data.csv", "label,news\n", "is not JSONL"),
    ],
)
def test_bad_dataset(capsys, workspace, name, content, expected):
    path = workspace.root / name
    path.write_text(content)
    code, err = run_with_dataset(capsys, workspace, path)
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert workspace.written() == []


def test_missing_dataset_refuses_launch(capsys, workspace):
    code, err = run_with_dataset(capsys, workspace, workspace.root / "nope.jsonl")
    assert code == 2 and "nope.jsonl" in err and "not in this repository" in err
    assert workspace.written() == []


def test_malformed_dataset_fails_dry_run_too(capsys, workspace):
    path = workspace.root / "bad.jsonl"
    path.write_text("{oops\n")
    code, err = run_with_dataset(capsys, workspace, path, "--dry-run")
    assert code == 2 and "bad.jsonl:1" in err
