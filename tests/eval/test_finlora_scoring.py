"""--scoring finlora (eval/finlora_scoring.py, the finlora_* kinds) and the full FinLoRA registry, on hand-made
cases (fast: no model; the run uses a stand-in engine).

    .venv/bin/python -m pytest tests/eval/test_finlora_scoring.py -q
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from sklearn.metrics import precision_score

import eval.engine as engine
import eval.generation as generation
from eval import finlora_scoring as F
from eval import metrics as M
from eval.fixtures import BUNDLED_REF, run_record
from eval.fixtures import make_fake_adapter as fake_adapter
from eval.kinds import KINDS
from eval.pair_eval import score_outputs
from eval.run_plan import Settings, fingerprint, rows_and_pairs
from eval.tasks import TaskData, for_scoring, load_registry, load_task_data
from lora.cli.shims import eval_main as main
from lora.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def err_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------- the registry is FinLoRA's benchmark


def test_registry_scorers_follow_finlora():
    """Files and budgets are checked against FinLoRA's own harness (tests/eval/test_finlora_parity.py)."""
    registry = load_registry()
    for name, task in registry.items():
        assert task.data.parent == REPO / "data" / "test"
        if task.relabel:  # not FinLoRA's labels, so no FinLoRA rule (eval/tasks.py refuses one)
            assert task.finlora is None, name
            continue
        scorer = {"xbrl_finer": "finlora_entities", "xbrl_fnxl": "finlora_entities", "financebench": "finlora_bertscore",
                  "xbrl_term": "finlora_bertscore"}.get(name, "finlora_labels")
        assert task.finlora.kind is KINDS[scorer], name
    assert registry["nwgi"].labels is not None and len(registry["nwgi"].labels) == 7
    assert registry["xbrl_finer"].kind.name == "entities"


def test_shipped_data_loads_under_both_scorings():
    for task in load_registry().values():
        if not task.data.is_file():
            continue
        assert load_task_data(task).rows
        if task.finlora is None:
            with pytest.raises(UserError, match="no FinLoRA rule"):
                for_scoring(task, "finlora", None)
        elif not task.finlora.kind.needs_encoder:
            assert load_task_data(for_scoring(task, "finlora", None)).rows


# ---------------------------------------------------------------- FinLoRA's rules, one by one


def test_answer_is_text_after_last_cue():
    prompt = "Instruction: sentiment?\nInput: shares up\nAnswer: "
    assert F.answer_after_last_cue(prompt, " positive \n") == "positive"
    # a model that keeps writing examples: FinLoRA reads the LAST "Answer:"
    assert F.answer_after_last_cue(prompt, "positive\nInput: shares down\nAnswer: negative") == "negative"
    # no cue anywhere (FiNER's prompt ends "Output US GAAP tags:"): the whole text, prompt included
    assert F.answer_after_last_cue("Tags:", " A, B") == "Tags: A, B"


def test_earliest_label_case_insensitive():
    labels = ["negative", "neutral", "positive"]
    assert F.earliest_label("POSITIVE, not negative", labels) == "positive"
    assert F.earliest_label("it is not positive but Negative", labels) == "positive"  # earliest, not meaning
    assert F.earliest_label("no idea", labels) is None


def test_ties_go_to_the_longest_label():
    # FinLoRA orders labels found at one index by set order (changes per process); we pick the longest.
    labels = ["us-gaap:Revenues", "us-gaap:RevenuesNetOfInterestExpense", ""]
    assert F.earliest_label("us-gaap:RevenuesNetOfInterestExpense", labels) == "us-gaap:revenuesnetofinterestexpense"
    assert F.earliest_label("us-gaap:Revenues", labels) == "us-gaap:revenues"
    assert F.earliest_label("", labels) == ""  # the empty label is found everywhere; alone it wins


def test_label_scores_case_and_raw_targets():
    metrics, rows = F.finlora_label_scores(["POSITIVE", "negative!", "meh"], ["Positive", "Negative", "Positive"])
    assert [r["correct"] for r in rows] == [True, True, False]
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["unparsed"] == 1


def test_printed_f1_is_higher_than_sklearn_on_parsed_labels():
    """A wrong answer enters FinLoRA's F1 as its raw text, a class of its own, so it is never a false
    positive of the class it names: every real class keeps precision 1.0 and the F1 goes up."""
    targets = ["positive", "positive", "negative", "negative"]
    answers = ["positive", "Positive.", "It is positive", "negative"]
    metrics, _ = F.finlora_label_scores(answers, targets)
    assert metrics["accuracy"] == 0.75
    # by hand: positive F1 1.0 (support 2), negative P 1 R 1/2 F1 2/3 (support 2) -> (2 + 4/3) / 4
    assert metrics["f1_finlora"] == pytest.approx((2 * 1.0 + 2 * 2 / 3) / 4)
    # parsed labels: positive P 2/3 R 1 F1 0.8, negative F1 2/3 -> (1.6 + 4/3) / 4
    assert metrics["f1_weighted"] == pytest.approx((2 * 0.8 + 2 * 2 / 3) / 4)
    assert metrics["f1_finlora"] > metrics["f1_weighted"]
    response = [t if ok else a for t, a, ok in zip(targets, answers, [True, True, False, True], strict=True)]
    assert precision_score(targets, response, labels=["negative", "positive"], average=None,
                           zero_division=0).tolist() == [1.0, 1.0]


def test_entity_split_pads_and_truncates():
    answers, targets, counts = M.process_batched(["A, B, C, D", "X", "P,\nQ"], ["A,B", "X, Y ,Z", "P,Q"])
    assert answers == ["A", "B", "X", "", "", "P", "Q"]
    assert targets == ["A", "B", "X", "Y", "Z", "P", "Q"]
    assert counts == [2, 3, 2]
    metrics, rows = F.score_entities(["A, B, C, D", "X", "P,\nQ"], ["A,B", "X, Y ,Z", "P,Q"], with_intervals=False)
    assert metrics["entities"] == 7 and metrics["n"] == 3
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert [r["correct"] for r in rows] == [1.0, pytest.approx(1 / 3), 1.0]


def test_standard_entity_kind_parses_each_piece():
    kind = KINDS["entities"]
    targets = [kind.normalize_target(t) for t in ["Revenues,AssetsNet", "Revenues"]]
    labels = kind.derive_labels(targets)
    assert labels == ("assetsnet", "revenues")
    metrics, rows = kind.score(["The tag is revenues, AssetsNet and more\n2nd line", ""], targets, labels,
                               with_intervals=False)
    assert [r["parsed"] for r in rows] == [["revenues", "assetsnet"], [None]]
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["unparsed"] == 1


def test_pandas_target_rule_matches_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    columns = [["15092.40", "3"], ["6000000", "12.0", " 7 "], ["1.5", "abc"], ["positive", "neutral"], ["1e3", "2"]]
    for targets in columns:
        path = tmp_path / "t.jsonl"
        path.write_text("".join(json.dumps({"context": "c", "target": t}) + "\n" for t in targets))
        via_pandas = [str(x) for x in pd.read_json(path, lines=True)["target"].tolist()]
        assert F.pandas_like_targets(targets) == via_pandas, targets
    assert F.pandas_like_targets(["15092.40", "3"]) == ["15092.4", "3.0"]  # what FinLoRA compares against


# ---------------------------------------------------------------- wiring: scoring mode, prompt, fingerprint


def test_finlora_task_and_score_outputs():
    task = for_scoring(load_registry()["fpb"], "finlora", None)
    assert task.kind.name == "finlora_labels" and task.max_new_tokens == 10 and not task.kind.stop_at_newline
    rows = [{"id": 0, "context": "Q1\nAnswer: ", "target": "positive"},
            {"id": 1, "context": "Q2\nAnswer: ", "target": "negative"}]
    data = TaskData(task=task, rows=rows, labels=None, sha256="x")
    metrics, per_row = score_outputs(data, ["positive\nInput: x\nAnswer: negative", "Negative"], None)
    assert [r["answer"] for r in per_row] == ["negative", "Negative"]
    assert metrics["accuracy"] == 0.5


def test_finlora_scoring_uses_raw_prompt_and_its_own_fingerprint(tmp_path):
    from eval.discovery import discover, group_by_base

    fake_adapter(tmp_path / "a", run=run_record("a", prompt_format="chatml"))
    group = group_by_base(discover([tmp_path / "a"]))[0]
    data = load_task_data(load_registry()["fpb"]).head(3)
    standard, finlora = Settings(out=tmp_path), Settings(out=tmp_path, scoring="finlora")
    _, pairs = rows_and_pairs(group, {"fpb": data}, finlora, many_groups=False)
    assert {(p.row, p.prompt_format, p.template) for p in pairs} == {("base", "raw", "{context}"), ("a", "raw", "{context}")}
    _, pairs_std = rows_and_pairs(group, {"fpb": data}, standard, many_groups=False)
    assert {p.prompt_format for p in pairs_std} == {"chatml"}
    assert fingerprint(pairs[0], data, group, standard, {}) != fingerprint(pairs[0], data, group, finlora, {})


@pytest.fixture
def fake_engine(monkeypatch):
    calls: list[dict] = []

    def generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline, batch_size, progress=None,
                 prefix_cache=True):
        calls.append({"prompts": prompts, "max_new_tokens": max_new_tokens, "stop_at_newline": stop_at_newline})
        return ["neutral\nAnswer: negative"] * len(prompts), generation.GenStats(0.5, len(prompts), 0)

    class Host:
        def __init__(self, loaded, merge="off"):
            self.loaded = loaded
            self.merge_choices: dict = {}

        def model_for(self, adapter):
            import contextlib
            return adapter, contextlib.nullcontext()

    monkeypatch.setattr(engine, "load_base", lambda path, quant=None, dtype=None: SimpleNamespace(tokenizer=None, load_seconds=0.1,
                                                                                       dtype="float32"))
    monkeypatch.setattr(engine, "AdapterHost", Host)
    monkeypatch.setattr(generation, "generate", generate)
    monkeypatch.setattr(engine, "disable_progress_bars", lambda: None)
    return calls


def test_finlora_run_records_scoring(tmp_path, fake_engine):
    out = tmp_path / "out"
    argv = ["--base-model", BUNDLED_REF, "--tasks", "fpb", "--limit", "2", "--out", str(out), "--no-progress"]
    assert main([*argv, "--scoring", "finlora"]) == 0
    assert fake_engine[0]["max_new_tokens"] == 10 and fake_engine[0]["stop_at_newline"] is False
    contexts = [json.loads(line)["context"] for line in open(REPO / "data/test/fpb_test.jsonl", encoding="utf-8")][:2]
    assert fake_engine[0]["prompts"] == contexts  # raw context, no template
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["scoring"] == "finlora"
    res = results["rows"][0]["results"]["fpb"]
    assert res["scoring"] == "finlora" and res["fingerprint"]["scoring"] == "finlora"
    assert res["metrics"]["accuracy"] == 0.5  # fpb[:2] targets neutral, negative; the answer read is "negative"
    # the finished finlora pair is not reused for standard scoring
    fake_engine.clear()
    assert main(argv) == 0
    assert len(fake_engine) == 1 and fake_engine[0]["stop_at_newline"] is True
    standard = json.loads((out / "results.json").read_text())["rows"][0]["results"]["fpb"]
    assert standard["scoring"] == "standard" and standard["metrics"]["accuracy"] == 0.5  # first line "neutral"


# ---------------------------------------------------------------- bad input: one line, exit 2


def test_unknown_scoring_value_suggests(capsys):
    assert main(["--base-model", BUNDLED_REF, "--scoring", "finlroa"]) == 2
    line = err_line(capsys)
    assert "--scoring" in line and "did you mean 'finlora'" in line


def test_prompt_format_is_refused_under_finlora(tmp_path, capsys, fake_engine):
    assert main(["--base-model", BUNDLED_REF, "--tasks", "fpb", "--scoring", "finlora", "--prompt-format", "chatml",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--prompt-format does nothing under --scoring finlora" in err_line(capsys) and not fake_engine


def test_missing_test_file(tmp_path, capsys, fake_engine):
    reg = tmp_path / "tasks.json"
    reg.write_text(json.dumps({
        "here": {"data": str(REPO / "data/test/fpb_test.jsonl"), "kind": "classification"},
        "gone": {"data": "gone_test.jsonl", "kind": "classification"},
    }))
    assert main(["--tasks-json", str(reg), "--list-tasks"]) == 0
    listed = capsys.readouterr().out
    assert f"MISSING {tmp_path / 'gone_test.jsonl'}" in listed and "MISSING" not in listed.splitlines()[0]
    out = tmp_path / "out"
    assert main(["--tasks-json", str(reg), "--base-model", BUNDLED_REF, "--tasks", "gone", "--out", str(out)]) == 2
    line = err_line(capsys)
    assert "gone_test.jsonl" in line and "not found" in line and not fake_engine and not out.exists()
    # without --tasks the tasks whose file is here run, and the others are named as skipped
    assert main(["--tasks-json", str(reg), "--base-model", BUNDLED_REF, "--limit", "1", "--out", str(out),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: skipped task gone" in err and "gone_test.jsonl" in err


def test_task_without_finlora_rule_is_refused(tmp_path, capsys, fake_engine):
    reg = tmp_path / "tasks.json"
    reg.write_text(json.dumps({"mine": {"data": str(REPO / "data/test/fpb_test.jsonl"), "kind": "classification"}}))
    assert main(["--tasks-json", str(reg), "--base-model", BUNDLED_REF, "--scoring", "finlora", "--out",
                 str(tmp_path / "o")]) == 2
    line = err_line(capsys)
    assert "task mine" in line and "no FinLoRA rule" in line and not fake_engine


def test_finlora_bertscore_needs_an_encoder(tmp_path, capsys, fake_engine):
    assert main(["--base-model", BUNDLED_REF, "--tasks", "xbrl_term", "--scoring", "finlora", "--out",
                 str(tmp_path / "o")]) == 2
    line = err_line(capsys)
    assert "xbrl_term" in line and "--bertscore-model" in line and not fake_engine


def test_bad_finlora_block(tmp_path):
    from lora.core.errors import UserError

    reg = tmp_path / "tasks.json"
    for block, needle in (({"scorer": "finlora_label", "max_new_tokens": 10}, "did you mean 'finlora_labels'"),
                          ({"scorer": "finlora_labels", "max_new_token": 10}, "did you mean 'max_new_tokens'"),
                          ({"scorer": "finlora_labels", "max_new_tokens": 0}, "finlora.max_new_tokens")):
        reg.write_text(json.dumps({"t": {"data": "x.jsonl", "kind": "classification", "finlora": block}}))
        with pytest.raises(UserError) as info:
            load_registry(reg)
        assert str(reg) in str(info.value) and "task 't'" in str(info.value) and needle in str(info.value)
