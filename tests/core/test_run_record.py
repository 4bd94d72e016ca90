"""lora/core/run_record.py: run.json defined once — schema versions, one-line errors, portable paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.fixtures import run_record
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT
from lora.core.run_record import SCHEMA_VERSION, RunRecord, portable_path, resolve_portable


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


def test_compute_round_trips_and_older_files_without_it_still_load(tmp_path):
    from lora.core.compute import ComputeRecord, PhaseCompute

    total = PhaseCompute(name="total", wall_seconds=381.0, peak_rss_bytes=2_100_000_000, cpu_percent=93.0)
    compute = ComputeRecord(interval_seconds=1.0, cpu_count=2, total=total, phases=[total.model_copy(update={"name": "train"})])
    record = run_record("r", compute=compute)
    record.write(tmp_path)
    assert RunRecord.read(tmp_path).compute == compute
    raw = run_record("r").to_json()
    del raw["compute"]  # a run.json written before compute tracking
    (tmp_path / "run.json").write_text(json.dumps(raw))
    assert RunRecord.read(tmp_path).compute is None


def test_a_malformed_compute_is_one_line_naming_the_key(tmp_path):
    raw = {**run_record("r").to_json(), "compute": {"interval_seconds": 1, "cpu_count": 2, "total": {"name": "t"}}}
    (tmp_path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="key 'compute.total.wall_seconds'"):
        RunRecord.read(tmp_path)


@pytest.mark.parametrize("fixture", ["run_schema1.json", "run_schema2_before_restructure.json"])
def test_run_json_written_before_the_restructure_still_reads(tmp_path, fixture):
    """Files written by the code before lora/ was split into stages (commit 7e0e24e, eval.fixtures.run_record)."""
    raw = (Path(__file__).parent / "fixtures" / fixture).read_text()
    (tmp_path / "run.json").write_text(raw)
    record = RunRecord.read(tmp_path)
    assert record.name == "before_restructure" and record.status == "complete"
    assert record.schema_ == json.loads(raw)["schema"] and record.base_model.endswith("smollm2-135m-instruct")
