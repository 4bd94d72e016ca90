"""lora/run_record.py: run.json defined once — schema versions, one-line errors, portable paths."""
from __future__ import annotations

import json

import pytest

from eval.fixtures import run_record
from lora.errors import UserError
from lora.fsutil import REPO_ROOT
from lora.run_record import SCHEMA_VERSION, RunRecord, portable_path, resolve_portable


def test_round_trip_keeps_every_field(tmp_path):
    record = run_record("r", status="failed", exit_code=3, command=["accelerate", "launch"])
    record.write(tmp_path)
    raw = json.loads((tmp_path / "run.json").read_text())
    assert raw["schema"] == SCHEMA_VERSION and RunRecord.read(tmp_path) == record


@pytest.mark.parametrize("change, message", [
    ({"schema": 99}, "schema 99 is not one this code reads"),
    ({"schema": None}, "schema None"),
    ({"status": "done"}, "key 'status'"),
    ({"surprise": 1}, "key 'surprise'"),
])
def test_bad_run_json_is_one_line(tmp_path, change, message):
    raw = {**run_record("r").to_json(), **change}
    (tmp_path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message) as err:
        RunRecord.read(tmp_path)
    assert "\n" not in str(err.value)


def test_schema_1_is_still_read(tmp_path):
    raw = {**run_record("r").to_json(), "schema": 1, "datasets": [{"path": "/abs/fpb.jsonl", "sha256": "0" * 64}]}
    (tmp_path / "run.json").write_text(json.dumps(raw))
    assert RunRecord.read(tmp_path).datasets[0].path == "/abs/fpb.jsonl"


def test_no_run_json_is_none(tmp_path):
    assert RunRecord.read(tmp_path) is None


def test_portable_paths_hold_no_machine_path(tmp_path):
    adapter = tmp_path / "adapters" / "run"
    inside = REPO_ROOT / "data" / "train" / "fpb_train.jsonl"
    assert portable_path(inside, adapter) == "data/train/fpb_train.jsonl"
    outside = tmp_path / "mine" / "train.jsonl"
    ref = portable_path(outside, adapter)
    assert ref == "../../mine/train.jsonl" and not ref.startswith("/")
    outside.parent.mkdir()
    outside.write_text("{}")
    assert resolve_portable(ref, adapter) == outside.resolve()
    assert resolve_portable("data/train/fpb_train.jsonl", adapter) == inside
