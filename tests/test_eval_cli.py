"""Discovery, planning, bad-input handling and `score`, through the functions and the CLI (fast: no model
is loaded, adapters are fake folders).

    .venv/bin/python -m pytest tests/test_eval_cli.py -q
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.cli import main
from eval.discovery import discover, group_by_base, prompt_for, resolve_base
from eval.errors import InputError
from eval.runner import Settings, plan_group
from eval.tasks import load_registry, load_task_data
from lora.base_model import BUNDLED_MODEL_REF
from lora.prompts import PROMPT_FORMATS

FINLORA_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "finlora" / "adapter_configs"


def fake_adapter(folder: Path, base: str = "models/base_model/smollm2-135m-instruct", run: dict | None = None,
                 weights: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA", "r": 2}))
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    else:
        from safetensors.torch import save_file
        import torch

        save_file({"base_model.model.x.lora_A.weight": torch.zeros(2, 2)}, str(folder / "adapter_model.safetensors"))
    if run is not None:
        (folder / "run.json").write_text(json.dumps(run))
    return folder


def run_json(name: str, status: str = "complete", fmt: str = "chatml") -> dict:
    return {"schema": 1, "name": name, "status": status, "base_model": "models/base_model/smollm2-135m-instruct",
            "prompt_format": {"name": fmt, "template": PROMPT_FORMATS[fmt]}, "entry": {}, "recipe_path": "x"}


def err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


# ---------------------------------------------------------------- discovery


def test_discovery_recursive_skips_checkpoints_and_names_rows(tmp_path):
    fake_adapter(tmp_path / "lora_adapters" / "alpha", run=run_json("alpha"))
    fake_adapter(tmp_path / "lora_adapters" / "alpha" / "checkpoint-10", run=run_json("alpha-ckpt"))
    fake_adapter(tmp_path / "lora_adapters" / "fp16_r8" / "ner_llama")  # FinLoRA layout, no run.json
    found = discover([tmp_path / "lora_adapters"])
    assert [a.name for a in found] == ["alpha", "fp16_r8/ner_llama"]
    assert [a.slug for a in found] == ["alpha", "fp16_r8_ner_llama"]
    assert all(a.error is None for a in found)
    # an adapter folder given directly is named after itself
    assert [a.name for a in discover([tmp_path / "lora_adapters" / "fp16_r8" / "ner_llama"])] == ["ner_llama"]


def test_discovery_errors_are_rows(tmp_path):
    fake_adapter(tmp_path / "running", run=run_json("running", status="running"))
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


def test_duplicate_names_get_paths(tmp_path):
    fake_adapter(tmp_path / "a" / "x", run=run_json("same"))
    fake_adapter(tmp_path / "b" / "x", run=run_json("same"))
    names = [a.name for a in discover([tmp_path])]
    assert names == ["a/x", "b/x"]  # the folders under the argument, not absolute paths


def test_copies_of_one_run_are_named_by_folder(tmp_path):
    # Four copies of one trained adapter (same run.json name) stay four rows, named by their folders.
    for i in range(3):
        fake_adapter(tmp_path / f"copy_{i}", run=run_json("sentiment"))
    fake_adapter(tmp_path / "other", run=run_json("base"))  # "base" is the base row's name
    names = [a.name for a in discover([tmp_path])]
    assert names == ["copy_0", "copy_1", "copy_2", "other"]
    assert len({a.slug for a in discover([tmp_path])}) == 4


def test_prompt_precedence(tmp_path):
    with_run = discover([fake_adapter(tmp_path / "r", run=run_json("r", fmt="chatml"))])[0]
    without = discover([fake_adapter(tmp_path / "n")])[0]
    assert prompt_for(with_run, "raw", "llama3_chat") == ("chatml", PROMPT_FORMATS["chatml"])  # trained with it
    assert prompt_for(without, None, None) == ("finlora_inst", PROMPT_FORMATS["finlora_inst"])
    assert prompt_for(without, "raw", None)[0] == "raw"
    assert prompt_for(without, "raw", "chatml")[0] == "chatml"


def test_resolve_base(tmp_path):
    assert resolve_base(BUNDLED_MODEL_REF).path is not None or resolve_base(BUNDLED_MODEL_REF).error
    missing = resolve_base("meta-llama/Llama-3.1-8B-Instruct")
    assert missing.path is None and "meta-llama/Llama-3.1-8B-Instruct" in missing.error
    (tmp_path / "empty").mkdir()
    assert "no config.json" in resolve_base(str(tmp_path / "empty")).error


def test_grouping_and_base_rows_follow_adapter_prompts(tmp_path):
    fake_adapter(tmp_path / "a", run=run_json("a", fmt="chatml"))
    fake_adapter(tmp_path / "b", run=run_json("b", fmt="chatml"))
    fake_adapter(tmp_path / "c")  # no run.json: finlora_inst
    fake_adapter(tmp_path / "other", base="someone/missing-model")
    adapters = discover([tmp_path])
    groups = group_by_base(adapters)
    assert [len(g.adapters) for g in groups] == [3, 1]
    assert "someone/missing-model" in groups[1].base.error
    datas = {"fpb": load_task_data(load_registry()["fpb"])}
    rows, pairs = plan_group(groups[0], datas, Settings(out=tmp_path), many_groups=False)
    assert [r.name for r in rows] == ["base [chatml]", "base [finlora_inst]", "a", "b", "c"]
    assert {(p.row, p.prompt_format, p.base_row) for p in pairs} == {
        ("base [chatml]", "chatml", None), ("base [finlora_inst]", "finlora_inst", None),
        ("a", "chatml", "base [chatml]"), ("b", "chatml", "base [chatml]"), ("c", "finlora_inst", "base [finlora_inst]"),
    }
    # one prompt in the group: a single row called "base"
    rows, _ = plan_group(group_by_base(adapters[:2])[0], datas, Settings(out=tmp_path), many_groups=False)
    assert [r.name for r in rows] == ["base", "a", "b"]
    # --base-model puts everyone in one group
    assert len(group_by_base(adapters, override=str(tmp_path))) == 1


# ---------------------------------------------------------------- bad input -> exit 2


def test_folder_without_adapters(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--tasks", "fpb"]) == 2
    line = err_line(capsys)
    assert str(tmp_path / "empty") in line and "no adapters" in line


def test_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope" in err_line(capsys)


def test_unknown_task_lists_known(tmp_path, capsys):
    fake_adapter(tmp_path / "a", run=run_json("a"))
    assert main([str(tmp_path / "a"), "--tasks", "fpb,nosuch"]) == 2
    line = err_line(capsys)
    assert "nosuch" in line and "fpb" in line and "financebench" in line


def _registry(tmp_path: Path, data: str) -> Path:
    reg = tmp_path / "tasks.json"
    reg.write_text(json.dumps({"mini": {"data": data, "kind": "classification", "labels": ["negative", "positive"]}}))
    return reg


def test_missing_task_data(tmp_path, capsys):
    fake_adapter(tmp_path / "a", run=run_json("a"))
    reg = _registry(tmp_path, "missing.jsonl")
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    line = err_line(capsys)
    assert "missing.jsonl" in line and "not found" in line


def test_malformed_task_line(tmp_path, capsys):
    fake_adapter(tmp_path / "a", run=run_json("a"))
    (tmp_path / "mini.jsonl").write_text('{"context": "c", "target": "negative"}\n{"context": "c"\n')
    reg = _registry(tmp_path, "mini.jsonl")
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    assert f"{tmp_path / 'mini.jsonl'}:2:" in err_line(capsys)
    (tmp_path / "mini.jsonl").write_text('{"context": "c", "target": "negative"}\n{"context": "c", "target": "meh"}\n')
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    line = err_line(capsys)
    assert ":2:" in line and "meh" in line


def test_bad_registry(tmp_path, capsys):
    reg = tmp_path / "tasks.json"
    reg.write_text(json.dumps({"t": {"data": "x.jsonl", "kind": "vibes"}}))
    with pytest.raises(InputError, match="kind must be one of"):
        load_registry(reg)
    assert main(["--tasks-json", str(reg), "--list-tasks"]) == 2


def test_list_tasks(capsys):
    assert main(["--list-tasks"]) == 0
    out = capsys.readouterr().out
    for t in ("fpb", "tfns", "ner", "formula", "xbrl_term", "financebench"):
        assert t in out


def test_registry_labels_and_data_agree():
    for task in load_registry().values():
        data = load_task_data(task)  # raises on any malformed line / off-label target
        assert data.rows


# ---------------------------------------------------------------- groups that cannot run: rows, not crashes


@pytest.mark.skipif(not FINLORA_CONFIGS.is_dir(), reason="FinLoRA adapter configs not present")
def test_finlora_layout_reports_missing_base_and_weights(tmp_path, capsys):
    for cfg in sorted(FINLORA_CONFIGS.glob("fp16_r8_*.json"))[:3]:
        variant, name = "fp16_r8", cfg.stem.removeprefix("fp16_r8_")
        (tmp_path / "lora_adapters" / variant / name).mkdir(parents=True)
        shutil.copy(cfg, tmp_path / "lora_adapters" / variant / name / "adapter_config.json")
    out = tmp_path / "out"
    code = main([str(tmp_path / "lora_adapters"), "--tasks", "fpb", "--limit", "2", "--out", str(out), "--no-progress"])
    assert code == 1  # finished, with error rows
    captured = capsys.readouterr()
    assert "meta-llama/Llama-3.1-8B-Instruct" in captured.err
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert len([r for r in rows.values() if r["kind"] == "adapter"]) == 3
    assert all(r["error"] for r in rows.values())
    assert "Errors:" in (out / "results.md").read_text()


# ---------------------------------------------------------------- score


def test_score_prints_metrics(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps(x) for x in [
        {"output": "negative", "target": "negative"}, {"output": "Strongly positive!", "target": "positive"},
        {"output": "neutral", "target": "positive"}, {"output": "no idea", "target": "neutral"},
    ]) + "\n")
    assert main(["score", "--task", "fpb", "--predictions", str(preds)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == 4 and got["accuracy"] == 0.5 and got["unparsed"] == 1
    assert set(got["ci"]) == {"accuracy", "f1_weighted", "f1_macro"}


def test_score_numeric_and_text(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"output": "$1,000.005", "target": "1000.00"}) + "\n")
    assert main(["score", "--task", "formula", "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    preds.write_text(json.dumps({"output": "a b c", "target": "a b c"}) + "\n")
    assert main(["score", "--task", "xbrl_term", "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["rougeL"] == 1.0


@pytest.mark.parametrize("content,needle", [
    ('{"output": "a", "target": "negative"}\n{broken\n', ":2:"),
    ('{"output": "a", "target": "negative"}\n{"output": 3, "target": "negative"}\n', ":2:"),
    ('{"output": "a", "target": "sideways"}\n', ":1:"),
])
def test_score_malformed(tmp_path, capsys, content, needle):
    preds = tmp_path / "p.jsonl"
    preds.write_text(content)
    assert main(["score", "--task", "fpb", "--predictions", str(preds)]) == 2
    assert needle in err_line(capsys)


def test_score_unknown_task(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"output": "a", "target": "b"}\n')
    assert main(["score", "--task", "nosuch", "--predictions", str(preds)]) == 2
    assert "known tasks" in err_line(capsys)
