"""eval/runner.py: planning, resume fingerprints and error rows with a stand-in engine (fast), and end to end
on the bundled SmolLM2-135M with throwaway adapters (slow: generates on CPU, ~1-2 min).

    .venv/bin/python -m pytest tests/test_eval_runner.py -q               # fast ones
    .venv/bin/python -m pytest tests/test_eval_runner.py -q -m slow       # end to end
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import eval.engine as engine
from eval.cli import main
from eval.discovery import discover, group_by_base
from eval.fixtures import BUNDLED_REF, run_record
from eval.fixtures import make_fake_adapter as fake_adapter
from eval.runner import Settings, rows_and_pairs
from eval.tasks import load_registry, load_task_data
from lora.run_record import RunRecord

TASKS = "fpb,formula"
LIMIT = 3


# ---------------------------------------------------------------- planning (pure)


def test_grouping_and_base_rows_follow_adapter_prompts(tmp_path):
    fake_adapter(tmp_path / "a", run=run_record("a", prompt_format="chatml"))
    fake_adapter(tmp_path / "b", run=run_record("b", prompt_format="chatml"))
    fake_adapter(tmp_path / "c")  # no run.json: finlora_inst
    fake_adapter(tmp_path / "other", base="someone/missing-model")
    adapters = discover([tmp_path])
    groups = group_by_base(adapters)
    assert [len(g.adapters) for g in groups] == [3, 1]
    datas = {"fpb": load_task_data(load_registry()["fpb"])}
    rows, pairs = rows_and_pairs(groups[0], datas, Settings(out=tmp_path), many_groups=False)
    assert [r.name for r in rows] == ["base [chatml]", "base [finlora_inst]", "a", "b", "c"]
    assert {(p.row, p.prompt_format, p.base_row) for p in pairs} == {
        ("base [chatml]", "chatml", None), ("base [finlora_inst]", "finlora_inst", None),
        ("a", "chatml", "base [chatml]"), ("b", "chatml", "base [chatml]"), ("c", "finlora_inst", "base [finlora_inst]"),
    }
    # one prompt in the group: a single row called "base"
    rows, _ = rows_and_pairs(group_by_base(adapters[:2])[0], datas, Settings(out=tmp_path), many_groups=False)
    assert [r.name for r in rows] == ["base", "a", "b"]
    # a group whose base is not here: its adapters' error rows, no base row
    rows, _ = rows_and_pairs(groups[1], datas, Settings(out=tmp_path), many_groups=True)
    assert [r.name for r in rows] == ["other"]


def test_broken_adapters_add_no_base_row(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("[]")
    datas = {"fpb": load_task_data(load_registry()["fpb"])}
    for override in (None, BUNDLED_REF):  # its own no-base group, or on --base-model's
        groups = group_by_base(discover([tmp_path / "bad"]), override)
        planned = [rows_and_pairs(g, datas, Settings(out=tmp_path), many_groups=False) for g in groups]
        assert [[r.name for r in rows] for rows, _ in planned] == [["bad"]]
        assert [p.row for _, pairs in planned for p in pairs] == ["bad"]


# ---------------------------------------------------------------- the run, with a stand-in engine (fast)


class FakeHost:
    """AdapterHost's interface; 'attaching' an adapter whose folder name starts with "broken" fails."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.attached: list[str] = []

    def attach(self, name, path):
        if Path(path).name.startswith("broken"):
            raise RuntimeError("size mismatch for lora_A\n  copying a param with shape [4, 576]")
        self.attached.append(name)

    def detach(self, name):
        self.attached.remove(name)

    def model_for(self, adapter):
        return adapter, contextlib.nullcontext()


@pytest.fixture
def fake_engine(monkeypatch):
    """Records every generate() call as (model, number of prompts); answers "negative" / "3"."""
    calls: list[tuple[str | None, int]] = []

    def generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline, batch_size, progress=None):
        calls.append((model, len(prompts)))
        return ["negative\n3"] * len(prompts), engine.GenStats(0.5, len(prompts), 0)

    loaded = SimpleNamespace(tokenizer=None, load_seconds=0.1, dtype="float32")
    monkeypatch.setattr(engine, "load_base", lambda path, quant=None: loaded)
    monkeypatch.setattr(engine, "AdapterHost", FakeHost)
    monkeypatch.setattr(engine, "generate", generate)
    monkeypatch.setattr(engine, "disable_progress_bars", lambda: None)
    return calls


def _argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [str(root), "--base-model", BUNDLED_REF, "--tasks", "fpb,formula", "--limit", "2", "--out", str(out),
            "--no-progress", *extra]


def test_fake_run_writes_pairs_and_results(tmp_path, fake_engine):
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 0
    assert sorted(fake_engine, key=str) == [("a", 2), ("a", 2), (None, 2), (None, 2)]
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["base", "a"]
    assert results["rows"][1]["results"]["fpb"]["metrics"]["accuracy"] == 0.5  # fpb[:2]: neutral, negative
    assert sorted(p.relative_to(out).as_posix() for p in (out / "pairs").rglob("*.json")) == [
        "pairs/a/formula.json", "pairs/a/fpb.json", "pairs/base/formula.json", "pairs/base/fpb.json"]


def test_editing_adapter_config_redoes_its_pairs(tmp_path, fake_engine):
    # Same weights, another lora_alpha: the adapter's output changes, so its finished pairs are stale.
    folder = fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 0
    fake_engine.clear()
    assert main(_argv(tmp_path / "ad", out)) == 0
    assert fake_engine == []  # nothing changed: everything read back
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 64}))
    assert main(_argv(tmp_path / "ad", out)) == 0
    assert sorted(fake_engine) == [("a", 2), ("a", 2)]  # the adapter's pairs again, not the base's


def test_broken_adapter_is_one_error_row_with_a_one_line_message(tmp_path, fake_engine, capsys):
    fake_adapter(tmp_path / "ad" / "good", run=run_record("good"))
    fake_adapter(tmp_path / "ad" / "broken", run=run_record("broken"))
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 1
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["broken"]["error"] == ("adapter failed to load: RuntimeError: size mismatch for lora_A; "
                                       "copying a param with shape [4, 576]")
    assert rows["good"]["error"] is None and set(rows["good"]["results"]) == {"fpb", "formula"}
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: broken: {rows['broken']['error']}"]


def test_failed_pair_is_one_error_cell(tmp_path, fake_engine, monkeypatch):
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    real = engine.generate

    def flaky(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
        if model == "a" and max_new_tokens == 50:  # formula (FinLoRA budget)
            raise ValueError("out of memory\nsecond line")
        return real(model, tokenizer, prompts, max_new_tokens, *args, **kwargs)

    monkeypatch.setattr(engine, "generate", flaky)
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 1
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["a"]["results"]["formula"] == {"error": "evaluation failed: ValueError: out of memory; second line"}
    assert "metrics" in rows["a"]["results"]["fpb"] and rows["a"]["error"] is None
    assert not (out / "pairs" / "a" / "formula.json").exists()  # error cells are retried next time


def test_damaged_pair_file_is_redone(tmp_path, fake_engine):
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 0
    (out / "pairs" / "a" / "fpb.json").write_bytes(b"\xff[[")
    (out / "pairs" / "base" / "fpb.json").write_text("[1, 2]")
    fake_engine.clear()
    assert main(_argv(tmp_path / "ad", out)) == 0
    assert sorted(fake_engine, key=str) == [("a", 2), (None, 2)]


# ---------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from eval.fixtures import make_tiny_adapter
    from lora.base_model import ensure_base_model

    base = ensure_base_model(quiet=True)
    root = tmp_path_factory.mktemp("lora_adapters")
    make_tiny_adapter(root / "tiny_a", base, seed=1)
    make_tiny_adapter(root / "tiny_b", base, seed=2, scale=0.05)
    shutil.copytree(root / "tiny_a", root / "unfinished")
    record = RunRecord.read(root / "unfinished")
    record.model_copy(update={"name": "unfinished", "status": "running"}).write(root / "unfinished")
    shutil.copytree(root / "tiny_a", root / "broken")
    record.model_copy(update={"name": "broken"}).write(root / "broken")
    (root / "broken" / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    return base, root


@pytest.fixture(scope="module")
def first_run(adapters, tmp_path_factory):
    _, root = adapters
    out = tmp_path_factory.mktemp("eval_out")
    loads = []
    original = engine.load_base
    engine.load_base = lambda *a, **k: loads.append(a) or original(*a, **k)
    try:
        code = main([str(root), "--tasks", TASKS, "--limit", str(LIMIT), "--batch-size", "2", "--out", str(out),
                     "--no-progress"])
    finally:
        engine.load_base = original
    return code, out, loads


@pytest.mark.slow
def test_run_outputs(first_run, adapters, capsys):
    from lora.prompts import PROMPT_FORMATS, apply

    code, out, loads = first_run
    assert code == 1  # finished, but two rows report errors
    assert len(loads) == 1  # one base load for base + 2 adapters × 2 tasks
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["base", "broken", "tiny_a", "tiny_b", "unfinished"]
    assert rows["unfinished"]["error"] == "training did not finish (run.json status: running)"
    assert "unreadable" in rows["broken"]["error"]
    assert rows["tiny_a"]["adapter"]["run"]["status"] == "complete"
    assert results["versions"]["peft"] and results["groups"][0]["load_seconds"] is not None
    contexts = [json.loads(line)["context"] for line in open(results["tasks"]["fpb"]["data"], encoding="utf-8")][:LIMIT]
    for name in ("base", "tiny_a", "tiny_b"):
        for task in ("fpb", "formula"):
            res = rows[name]["results"][task]
            assert res["metrics"]["n"] == LIMIT and res["prompt_format"] == "chatml"
            preds = [json.loads(x) for x in (out / res["predictions"]).read_text().splitlines()]
            assert [p["id"] for p in preds] == list(range(LIMIT))
            assert {"output", "parsed", "correct", "prompt_sha256", "target"} <= set(preds[0])
            assert res["metrics"]["accuracy"] == sum(p["correct"] for p in preds) / LIMIT
            if task == "fpb":  # the prompt is the one the adapter was trained with (run.json: chatml)
                want = [hashlib.sha256(apply(PROMPT_FORMATS["chatml"], c).encode()).hexdigest() for c in contexts]
                assert [p["prompt_sha256"] for p in preds] == want
            if name != "base":
                base_acc = rows["base"]["results"][task]["metrics"]["accuracy"]
                assert res["delta_vs_base"] == pytest.approx(res["metrics"]["accuracy"] - base_acc)
    md = (out / "results.md").read_text()
    assert "| base |" in md and "| tiny_a |" in md and "Δ" in md and "training did not finish" in md
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("row,kind,base_model,task,metric,value,ci_low,ci_high")
    assert any(line.startswith("tiny_b,adapter,") and ",fpb,f1_macro," in line for line in csv_lines)


@pytest.mark.slow
def test_rerun_skips_finished_pairs_and_redoes_a_lost_one(first_run, adapters, capsys):
    _, root = adapters
    code, out, _ = first_run
    before = json.loads((out / "results.json").read_text())
    keep = out / "pairs" / "tiny_a" / "fpb.json"
    keep_mtime = keep.stat().st_mtime_ns
    args = [str(root), "--tasks", TASKS, "--limit", str(LIMIT), "--batch-size", "2", "--out", str(out), "--no-progress"]

    loads = []
    original = engine.load_base
    engine.load_base = lambda *a, **k: loads.append(a) or original(*a, **k)
    try:
        assert main(args) == 1
        assert loads == []  # everything finished: no model needed
        (out / "pairs" / "tiny_b" / "formula.json").unlink()  # as if killed during this pair
        assert main(args) == 1
        assert len(loads) == 1
    finally:
        engine.load_base = original
    after = json.loads((out / "results.json").read_text())
    assert keep.stat().st_mtime_ns == keep_mtime
    for b, a in zip(before["rows"], after["rows"], strict=True):
        for task in b["results"]:
            assert a["results"][task]["metrics"] == b["results"][task]["metrics"]
