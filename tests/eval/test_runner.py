"""eval/runner.py: planning, resume fingerprints and error rows with a stand-in engine (fast), and end to end
on the bundled SmolLM2-135M with throwaway adapters (slow: generates on CPU, ~1-2 min).

    .venv/bin/python -m pytest tests/eval/test_runner.py -q               # fast ones
    .venv/bin/python -m pytest tests/eval/test_runner.py -q -m slow       # end to end
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import eval.engine as engine
import eval.generation as generation
import eval.merged_lora as merged_lora
from eval.discovery import discover, group_by_base
from eval.fixtures import BUNDLED_REF, run_record, six_task_registry
from eval.fixtures import make_fake_adapter as fake_adapter
from eval.run_plan import Settings, rows_and_pairs
from eval.tasks import load_registry, load_task_data
from lora.cli.shims import eval_main as main
from lora.core.run_record import RunRecord

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


def test_adapters_get_their_tasks_and_the_base_the_union(tmp_path):
    fake_adapter(tmp_path / "s", run=run_record("s", prompt_format="chatml"))
    fake_adapter(tmp_path / "t", run=run_record("t", prompt_format="chatml"))
    fake_adapter(tmp_path / "f")  # no run.json: finlora_inst
    adapters = discover([tmp_path])
    for a, tasks in zip(adapters, [("formula",), ("fpb",), ("fpb", "formula")], strict=True):
        a.tasks = tasks
    registry = load_registry()
    datas = {t: load_task_data(registry[t]).head(2) for t in ("fpb", "formula", "ner")}
    rows, pairs = rows_and_pairs(group_by_base(adapters)[0], datas, Settings(out=tmp_path), many_groups=False)
    assert {r.name: r.tasks for r in rows} == {"base [chatml]": ("fpb", "formula"), "base [finlora_inst]": ("formula",),
                                               "f": ("formula",), "s": ("fpb",), "t": ("fpb", "formula")}
    assert not any(p.task == "ner" for p in pairs)  # loaded, but nobody's task
    # tasks None (--tasks): every loaded task, as before
    for a in adapters:
        a.tasks = None
    rows, _ = rows_and_pairs(group_by_base(adapters)[0], datas, Settings(out=tmp_path), many_groups=False)
    assert all(r.tasks == ("fpb", "formula", "ner") for r in rows)


# ---------------------------------------------------------------- the run, with a stand-in engine (fast)


class FakeHost:
    """AdapterHost's interface; 'attaching' an adapter whose folder name starts with "broken" fails."""

    def __init__(self, loaded, merge="off"):
        self.loaded = loaded
        self.attached: list[str] = []
        self.merge = merge
        self.merge_choices: dict = {}

    def attach(self, name, path):
        if Path(path).name.startswith("broken"):
            raise RuntimeError("size mismatch for lora_A\n  copying a param with shape [4, 576]")
        self.attached.append(name)
        self.merge_choices[name] = merged_lora.MergeChoice(self.merge == "on", f"faked --merge-lora {self.merge}")

    def detach(self, name):
        self.attached.remove(name)
        del self.merge_choices[name]

    def model_for(self, adapter):
        return adapter, contextlib.nullcontext()


@pytest.fixture
def fake_engine(monkeypatch):
    """Records every generate() call as (model, number of prompts); answers "negative" / "3"."""
    calls: list[tuple[str | None, int]] = []

    def generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline, batch_size, progress=None,
                 prefix_cache=True):
        calls.append((model, len(prompts)))
        return ["negative\n3"] * len(prompts), generation.GenStats(0.5, len(prompts), 0)

    loaded = SimpleNamespace(tokenizer=None, load_seconds=0.1, dtype="float32")
    monkeypatch.setattr(engine, "load_base", lambda path, quant=None, dtype=None: loaded)
    monkeypatch.setattr(engine, "AdapterHost", FakeHost)
    monkeypatch.setattr(generation, "generate", generate)
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
    # --merge-lora reaches the host; each adapter pair says whether it ran merged, the base's says nothing
    assert results["settings"]["merge_lora"] == "auto"
    assert results["rows"][1]["results"]["fpb"]["lora_merge"] == {"merged": False, "why": "faked --merge-lora auto"}
    assert "lora_merge" not in results["rows"][0]["results"]["fpb"]
    assert "adapters on merged weights: 0 of 2 pairs (--merge-lora auto" in (out / "results.md").read_text()
    assert main(_argv(tmp_path / "ad", tmp_path / "on", "--merge-lora", "on")) == 0
    on = json.loads((tmp_path / "on" / "results.json").read_text())
    assert on["rows"][1]["results"]["fpb"]["lora_merge"]["merged"] is True


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
    real = generation.generate

    def flaky(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
        if model == "a" and max_new_tokens == 50:  # formula (FinLoRA budget)
            raise ValueError("out of memory\nsecond line")
        return real(model, tokenizer, prompts, max_new_tokens, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", flaky)
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


# ---------------------------------------------------------------- default task selection and --shots (fake engine)


@pytest.fixture
def prompts_seen(fake_engine, monkeypatch):
    """fake_engine, plus every prompt generate() got, per (model, max_new_tokens)."""
    seen: dict[tuple, list[str]] = {}
    inner = generation.generate

    def generate(model, tokenizer, prompts, max_new_tokens, *args, **kwargs):
        seen.setdefault((model, max_new_tokens), []).extend(prompts)
        return inner(model, tokenizer, prompts, max_new_tokens, *args, **kwargs)

    monkeypatch.setattr(generation, "generate", generate)
    return seen


def test_default_run_evaluates_each_adapter_on_its_own_tasks(tmp_path, fake_engine, capsys):
    root = tmp_path / "ad"
    fake_adapter(root / "sentiment_smollm2_cpu",
                 run=run_record("sentiment_smollm2_cpu", entry={"dataset_path": "data/train/fpb_train.jsonl"}))
    fake_adapter(root / "xbrl_term_llama_3_1_8b_8bits_r8", run=run_record("xbrl_term_llama_3_1_8b_8bits_r8"))
    out = tmp_path / "out"
    assert main([str(root), "--base-model", BUNDLED_REF, "--limit", "2", "--out", str(out), "--no-progress",
                 "--tasks-json", str(six_task_registry(tmp_path))]) == 0
    assert Counter(fake_engine) == {(None, 2): 3, ("sentiment_smollm2_cpu", 2): 2, ("xbrl_term_llama_3_1_8b_8bits_r8", 2): 1}
    err = capsys.readouterr().err
    assert "note: skipped task fiqa (family sentiment) is not in the task registry" in err
    results = json.loads((out / "results.json").read_text())
    assert list(results["tasks"]) == ["fpb", "tfns", "xbrl_term"]  # only what some row is evaluated on
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["base"]["tasks"] == ["fpb", "tfns", "xbrl_term"]  # the union of its adapters' tasks
    assert rows["sentiment_smollm2_cpu"]["tasks"] == list(rows["sentiment_smollm2_cpu"]["results"]) == ["fpb", "tfns"]
    assert rows["xbrl_term_llama_3_1_8b_8bits_r8"]["adapter"]["task_family"] == "xbrl_term"
    assert results["settings"]["task_selection"] == "per adapter (FinLoRA map)"
    md = (out / "results.md").read_text()
    sentiment_line = next(line for line in md.splitlines() if line.startswith("| sentiment_smollm2_cpu |"))
    assert sentiment_line.rstrip(" |").endswith("–")  # its xbrl_term cell: not evaluated
    assert "Each adapter is evaluated on its own tasks" in md


def test_unknown_family_is_said_in_results(tmp_path, fake_engine):
    fake_adapter(tmp_path / "ad" / "tiny", run=run_record("tiny"))
    out = tmp_path / "out"
    reg = tmp_path / "tasks.json"
    repo = Path(__file__).resolve().parents[2]
    reg.write_text(json.dumps({"fpb": {**json.loads((repo / "eval" / "tasks.json").read_text())["fpb"],
                                       "data": str(repo / "data" / "test" / "fpb_test.jsonl"), "train": None}}))
    assert main([str(tmp_path / "ad"), "--base-model", BUNDLED_REF, "--tasks-json", str(reg), "--limit", "2",
                 "--out", str(out), "--no-progress"]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][1]
    assert row["tasks"] == ["fpb"] and row["adapter"]["task_family"] is None
    assert "- **tiny**: task family unknown (no run.json dataset_path; name tiny matches no family): evaluated on " \
           "every task present" in (out / "results.md").read_text()


def _shots_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [str(root), "--base-model", BUNDLED_REF, "--tasks", "fpb,tfns", "--limit", "3", "--out", str(out),
            "--no-progress", "--shots", "2", "--tasks-json", str(six_task_registry(out.parent)), *extra]


def test_shots_give_the_base_row_examples_and_adapters_none(tmp_path, prompts_seen, fake_engine):
    from eval.tasks import load_registry

    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_shots_argv(tmp_path / "ad", out)) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["base 2-shot", "a"] and rows["base 2-shot"]["shots"] == 2 and rows["a"]["shots"] == 0
    assert rows["a"]["results"]["fpb"]["base_row"] == "base 2-shot"
    assert results["settings"]["shots"] == 2 and results["settings"]["shot_seed"] == 0
    assert results["tasks"]["fpb"]["shots"]["source"] == "train"
    held_out = results["tasks"]["tfns"]["shots"]["held_out_ids"]
    assert results["tasks"]["tfns"]["shots"]["source"] == "test" and len(held_out) == 2
    budget = load_registry()["fpb"].max_new_tokens  # fpb and tfns share FinLoRA's budget, so one key holds both
    base_fpb = prompts_seen[(None, budget)][:3]  # fpb first, then tfns
    fpb_rows = load_task_data(load_registry()["fpb"]).rows
    for prompt, row in zip(base_fpb, fpb_rows, strict=False):
        assert prompt.startswith("<|im_start|>user\nExample 1:\nInput: ") and "\n\nExample 2:\nInput: " in prompt
        assert f"Input: {row['context']}\nAnswer:" in prompt and "Example 3:" not in prompt
    assert all("Example 1:" not in p for p in prompts_seen[("a", budget)])  # adapters: zero-shot, as trained
    # every row of tfns scores the same rows: the held-out examples are nobody's test rows
    ids = {name: [json.loads(x)["id"] for x in (out / r["results"]["tfns"]["predictions"]).read_text().splitlines()]
           for name, r in rows.items()}
    assert ids["a"] == ids["base 2-shot"] and len(ids["a"]) == 3 and not set(ids["a"]) & set(held_out)
    fp = rows["base 2-shot"]["results"]["fpb"]["fingerprint"]
    assert fp["shots"]["k"] == 2 and len(fp["shots"]["examples_sha256"]) == 64
    assert rows["a"]["results"]["tfns"]["fingerprint"]["held_out_ids"] == held_out
    assert "shots" not in rows["a"]["results"]["fpb"]["fingerprint"]
    assert "Base rows are 2-shot" in (out / "results.md").read_text()


def test_changed_seed_or_k_redoes_what_depends_on_it(tmp_path, fake_engine):
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_shots_argv(tmp_path / "ad", out)) == 0
    fake_engine.clear()
    assert main(_shots_argv(tmp_path / "ad", out)) == 0
    assert fake_engine == []
    assert main(_shots_argv(tmp_path / "ad", out, "--shot-seed", "1")) == 0
    # the base's examples changed (both tasks); tfns's held-out rows changed, so the adapter's tfns too
    assert Counter(fake_engine) == {("a", 3): 1, (None, 3): 2}
    fake_engine.clear()
    assert main([*_shots_argv(tmp_path / "ad", out), "--shots", "0"]) == 0  # back to zero-shot: a plain "base"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["base", "a"] and rows[0]["shots"] == 0
    assert not {"shots", "held_out_ids"} & set(rows[1]["results"]["tfns"]["fingerprint"])


# ---------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from eval.fixtures import make_tiny_adapter
    from lora.core.base_model import ensure_base_model

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
    from lora.core.prompts import PROMPT_FORMATS, apply

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


def test_results_record_compute_per_phase(tmp_path, fake_engine):
    """results.json "compute": base load, adapter load, generate and scoring per row × task, and the total;
    results.md shows them. A rerun with every pair finished records only the phases it ran."""
    fake_adapter(tmp_path / "ad" / "a", run=run_record("a"))
    out = tmp_path / "out"
    assert main(_argv(tmp_path / "ad", out)) == 0
    rec = json.loads((out / "results.json").read_text())["compute"]
    names = [p["name"] for p in rec["phases"]]
    assert names[0] == f"base load {BUNDLED_REF}" and "adapter load a" in names
    assert {"generate base × fpb", "scoring base × fpb", "generate a × formula", "scoring a × formula"} <= set(names)
    assert rec["total"]["peak_rss_bytes"] > 10 << 20  # this test process, at least
    assert rec["total"]["wall_seconds"] >= max(p["wall_seconds"] for p in rec["phases"])
    assert "| generate a × fpb |" in (out / "results.md").read_text()
    assert main(_argv(tmp_path / "ad", out)) == 0
    assert json.loads((out / "results.json").read_text())["compute"]["phases"] == []
