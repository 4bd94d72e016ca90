"""eval/discovery.py: finding adapters, reading run.json through RunRecord, naming rows, resolving bases
(fast: adapters are fake folders, no model is loaded).

    .venv/bin/python -m pytest tests/eval/test_discovery.py -q
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.discovery import discover, group_by_base, prompt_for, resolve_base
from eval.fixtures import BUNDLED_REF, run_record
from eval.fixtures import make_fake_adapter as fake_adapter
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT
from lora.core.prompts import PROMPT_FORMATS
from lora.core.run_record import RunRecord


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """The machine's HF cache must not decide these tests: an empty one of our own."""
    from huggingface_hub import constants

    cache = tmp_path / "hub_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_discovery_recursive_skips_checkpoints_and_names_rows(tmp_path):
    fake_adapter(tmp_path / "lora_adapters" / "alpha", run=run_record("alpha"))
    fake_adapter(tmp_path / "lora_adapters" / "alpha" / "checkpoint-10", run=run_record("alpha-ckpt"))
    fake_adapter(tmp_path / "lora_adapters" / "fp16_r8" / "ner_llama")  # FinLoRA layout, no run.json
    found = discover([tmp_path / "lora_adapters"])
    assert [a.name for a in found] == ["alpha", "fp16_r8/ner_llama"]
    assert [a.slug for a in found] == ["alpha", "fp16_r8_ner_llama"]
    assert all(a.error is None for a in found)
    # an adapter folder given directly is named after itself
    assert [a.name for a in discover([tmp_path / "lora_adapters" / "fp16_r8" / "ner_llama"])] == ["ner_llama"]


def test_discovery_decides_each_adapters_task_family(tmp_path):
    fake_adapter(tmp_path / "x" / "demo",
                 run=run_record("sentiment_smollm2_cpu", entry={"dataset_path": "data/train/fpb_train.jsonl"}))
    fake_adapter(tmp_path / "x" / "8bits_r8" / "finer_llama_3_1_8b_8bits_r8")  # FinLoRA layout: the folder says
    fake_adapter(tmp_path / "x" / "odd", run=run_record("odd"))
    found = {a.name: a for a in discover([tmp_path / "x"])}
    assert found["sentiment_smollm2_cpu"].family.name == "sentiment"
    assert found["sentiment_smollm2_cpu"].family.source == "run.json dataset_path fpb_train.jsonl"
    assert found["8bits_r8/finer_llama_3_1_8b_8bits_r8"].family.name == "finer"
    assert found["odd"].family.name is None
    facts = found["sentiment_smollm2_cpu"].facts()
    assert facts["task_family"] == "sentiment" and facts["task_family_source"].startswith("run.json")
    assert all(a.tasks is None for a in found.values())  # decided by the CLI, not by discovery


def test_discovery_errors_are_rows(tmp_path):
    fake_adapter(tmp_path / "running", run=run_record("running", status="running"))
    fake_adapter(tmp_path / "corrupt", weights=b"garbage")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "adapter_config.json").write_text("{}")
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "adapter_config.json").write_text("{not json")
    by_name = {a.name: a for a in discover([tmp_path])}
    assert by_name["running"].error == "training did not finish (run.json status: running)"
    assert "unreadable" in by_name["corrupt"].error
    assert "no adapter weights" in by_name["noweights"].error
    assert "not valid JSON" in by_name["badjson"].error


@pytest.mark.parametrize("content,needle", [
    ("{broken", "not valid JSON"),
    ('{"schema": 99, "name": "x"}', "schema 99"),
    ('{"schema": 2, "name": "x", "status": "complete"}', "'base_model'"),  # required keys missing
    (json.dumps({**run_record("x").to_json(), "surprise": 1}), "'surprise'"),  # extra="forbid"
    (json.dumps({**run_record("x").to_json(), "status": "done"}), "'status'"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "not valid JSON"),  # deeper than the parser's recursion
])
def test_malformed_run_json_is_that_adapters_error_row(tmp_path, content, needle):
    fake_adapter(tmp_path / "bad", run=None)
    fake_adapter(tmp_path / "good", run=run_record("good"))
    path = tmp_path / "bad" / "run.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    by_name = {a.name: a for a in discover([tmp_path])}
    assert by_name["good"].error is None
    error = by_name["bad"].error
    assert needle in error and str(path) in error
    assert "\n" not in error


def test_run_json_written_by_fixtures_reads_back(tmp_path):
    folder = fake_adapter(tmp_path / "a", run=run_record("a", prompt_format="llama3_chat"))
    assert RunRecord.read(folder).prompt_format.name == "llama3_chat"
    adapter = discover([folder])[0]
    assert adapter.prompt_format == "llama3_chat" and adapter.template == PROMPT_FORMATS["llama3_chat"]
    assert adapter.run["schema"] == 2 and adapter.run["status"] == "complete"


def test_run_json_without_context_placeholder(tmp_path):
    record = run_record("a")
    record.prompt_format.template = "no placeholder"
    adapter = discover([fake_adapter(tmp_path / "a", run=record)])[0]
    assert "{context}" in adapter.error


def test_multiline_run_name_becomes_one_line(tmp_path):
    adapter = discover([fake_adapter(tmp_path / "a", run=run_record("two\nlines"))])[0]
    assert adapter.name == "two; lines"


def test_duplicate_names_get_paths(tmp_path):
    fake_adapter(tmp_path / "a" / "x", run=run_record("same"))
    fake_adapter(tmp_path / "b" / "x", run=run_record("same"))
    names = [a.name for a in discover([tmp_path])]
    assert names == ["a/x", "b/x"]  # the folders under the argument, not absolute paths


def test_copies_of_one_run_are_named_by_folder(tmp_path):
    # Four copies of one trained adapter (same run.json name) stay four rows, named by their folders.
    for i in range(3):
        fake_adapter(tmp_path / f"copy_{i}", run=run_record("sentiment"))
    fake_adapter(tmp_path / "other", run=run_record("base"))  # "base" is the base row's name
    names = [a.name for a in discover([tmp_path])]
    assert names == ["copy_0", "copy_1", "copy_2", "other"]
    assert len({a.slug for a in discover([tmp_path])}) == 4


def test_prompt_precedence(tmp_path):
    with_run = discover([fake_adapter(tmp_path / "r", run=run_record("r", prompt_format="chatml"))])[0]
    without = discover([fake_adapter(tmp_path / "n")])[0]
    assert prompt_for(with_run, "raw", "llama3_chat") == ("chatml", PROMPT_FORMATS["chatml"])  # trained with it
    assert prompt_for(without, None, None) == ("finlora_inst", PROMPT_FORMATS["finlora_inst"])
    assert prompt_for(without, "raw", None)[0] == "raw"
    assert prompt_for(without, "raw", "chatml")[0] == "chatml"


@pytest.mark.parametrize("arg", ["~nosuchuser_eval/adapters", "x" * 5000, "a/" + "y" * 300])
def test_hostile_adapter_paths_are_one_line_errors(arg):
    with pytest.raises(UserError) as info:
        discover([arg])
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- base models


def test_resolve_base_local_folders(tmp_path):
    bundled = resolve_base(BUNDLED_REF)  # repo-relative, as run.json writes it
    assert bundled.error is None and bundled.path == str((REPO_ROOT / BUNDLED_REF).resolve())
    (tmp_path / "empty").mkdir()
    assert "no config.json" in resolve_base(str(tmp_path / "empty")).error
    assert resolve_base(str(tmp_path / "nope")).error.endswith("not available locally (pass --base-model PATH)")


def test_resolve_base_relative_to_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_base("m", cwd=tmp_path).path == str((tmp_path / "m").resolve())
    monkeypatch.chdir(tmp_path)
    assert resolve_base("m").path == str((tmp_path / "m").resolve())


def test_resolve_base_hub_id_only_from_the_local_cache(empty_hub_cache):
    missing = resolve_base("meta-llama/Llama-3.1-8B-Instruct")
    assert missing.path is None and "meta-llama/Llama-3.1-8B-Instruct" in missing.error
    snapshot = empty_hub_cache / "models--someone--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (empty_hub_cache / "models--someone--tiny" / "refs").mkdir()
    (empty_hub_cache / "models--someone--tiny" / "refs" / "main").write_text("abc123")
    assert resolve_base("someone/tiny").path == str(snapshot)


def test_run_json_base_relative_to_the_adapter_folder(tmp_path):
    # A run trained outside the repository writes its base relative to the adapter folder.
    base = tmp_path / "models" / "mybase"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    adapter_dir = tmp_path / "runs" / "a"
    fake_adapter(adapter_dir, base="unused-by-run-json", run=run_record("a", base_model=os.path.relpath(base, adapter_dir)))
    groups = group_by_base(discover([adapter_dir]), cwd=tmp_path / "runs")
    assert groups[0].base.error is None and groups[0].base.path == str(base.resolve())


def test_grouping(tmp_path):
    fake_adapter(tmp_path / "a", run=run_record("a"))
    fake_adapter(tmp_path / "b", run=run_record("b"))
    fake_adapter(tmp_path / "c")  # no run.json: adapter_config.json's base
    fake_adapter(tmp_path / "other", base="someone/missing-model")
    adapters = discover([tmp_path])
    groups = group_by_base(adapters)
    assert [[a.name for a in g.adapters] for g in groups] == [["a", "b", "c"], ["other"]]
    assert "someone/missing-model" in groups[1].base.error
    override = group_by_base(adapters, override=str(REPO_ROOT / BUNDLED_REF))  # --base-model: one group
    assert len(override) == 1 and len(override[0].adapters) == 4


def test_adapter_without_any_base_is_an_error_row_of_its_own_group(tmp_path):
    fake_adapter(tmp_path / "good", run=run_record("good"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("{not json")
    groups = group_by_base(discover([tmp_path]))
    assert [[a.name for a in g.adapters] for g in groups] == [["good"], ["bad"]]
    assert groups[0].base.error is None and groups[1].base.error
    assert "not valid JSON" in groups[1].adapters[0].error


def test_adapter_paths_may_be_missing_or_files(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        discover([tmp_path / "nope"])
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="expected an adapter folder"):
        discover([tmp_path / "f.txt"])
    folder = fake_adapter(tmp_path / "a", run=run_record("a"))
    assert [a.name for a in discover([folder / "adapter_config.json"])] == ["a"]  # the config file names its folder


def test_empty_folder_has_no_adapters(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no adapters found"):
        discover([Path(tmp_path / "empty")])
