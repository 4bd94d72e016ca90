"""eval/finlora_layout.py (with finlora_published, finlora_table, finlora_render) + eval/plots.py: our results in
FinLoRA's layout, from hand-made results.json dicts (fast, no model).

    .venv/bin/python -m pytest tests/eval/test_finlora_layout.py -q
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from eval import finlora_layout as F
from eval import finlora_published as P
from eval import finlora_render as R
from eval import finlora_table as T
from lora.cli.shims import eval_main as main

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "finlora" / "published_results.csv"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
TASKS = {
    "fpb": {"kind": "classification", "headline": "accuracy", "n": 1212},
    "formula": {"kind": "numeric", "headline": "accuracy", "n": 200},
    "xbrl_term": {"kind": "text", "headline": "rougeL", "n": 651},
    "mytask": {"kind": "classification", "headline": "accuracy", "n": 10},  # not in FinLoRA's table
}


def cls(acc: float, f1: float | None = None, n: int = 100) -> dict:
    m = {"n": n, "accuracy": acc, "ci": {"accuracy": [acc - 0.05, acc + 0.05]}}
    if f1 is not None:
        m["f1_weighted"], m["ci"]["f1_weighted"] = f1, [f1 - 0.1, f1 + 0.1]
    return {"prompt_format": "chatml", "metrics": m}


def text(rouge: float, bert: float | None = None) -> dict:
    m = {"n": 50, "rougeL": rouge, "rouge1": rouge + 0.1, "ci": {"rougeL": [rouge - 0.02, rouge + 0.02]}}
    if bert is not None:
        m["bertscore_f1"], m["ci"]["bertscore_f1"] = bert, [bert - 0.01, bert + 0.01]
    return {"prompt_format": "chatml", "metrics": m}


def adapter_row(name: str, results: dict, entry: dict | None = None, path: str | None = None, **extra) -> dict:
    run = {"name": name, "entry": entry} if entry is not None else None
    return {"name": name, "kind": "adapter", "base_model": LLAMA, "error": None, "results": results,
            "adapter": {"path": path or f"lora_adapters/{name}", "run": run, "r": 8}, **extra}


def results_dict(rows: list[dict], tasks: dict | None = None, **settings) -> dict:
    return {"schema": 1, "created": "2026-11-25T00:00:00+00:00", "command": ["python", "-m", "eval", "x"],
            "settings": {"limit": None, "bertscore_model": None, **settings}, "tasks": tasks or TASKS,
            "rows": rows}


def base_row(results: dict, name: str = "base", base_model: str = LLAMA, **extra) -> dict:
    return {"name": name, "kind": "base", "base_model": base_model, "error": None, "results": results,
            "adapter": None, **extra}


PUBLISHED = {  # hand-made, so the tests do not depend on FinLoRA's numbers
    ("fpb", "base"): {"accuracy": 68.73, "f1_weighted": 0.677},
    ("fpb", "8bits_r8"): {"accuracy": 85.64, "f1_weighted": 0.922},
    ("formula", "base"): {"accuracy": 11.0, "f1_weighted": 0.136},
    ("xbrl_term", "base"): {"bertscore_f1": 0.574},
    ("xbrl_term", "8bits_r8"): {"bertscore_f1": 0.599},
}


def line(table: T.Table, task: str, metric: str) -> T.Line:
    [found] = [x for x in table.lines if x.task == task and x.metric == metric]
    return found


def column(table: T.Table, key: str) -> T.Column:
    [found] = [c for c in table.columns if c.key == key]
    return found


# ---------------------------------------------------------------- method mapping


@pytest.mark.parametrize("entry,variant", [
    ({"quant_bits": 8, "lora_r": 8}, "8bits_r8"),
    ({"quant_bits": 4, "lora_r": 4}, "4bits_r4"),
    ({"quant_bits": 16, "lora_r": 8}, "fp16_r8"),
    ({"lora_r": 8}, "fp16_r8"),  # FinLoRA: no quant_bits means 16-bit
    ({"quant_bits": 8, "lora_r": 8, "peft_use_dora": True}, "8bits_r8_dora"),
    ({"quant_bits": 8, "lora_r": 8, "peft_use_rslora": True}, "8bits_r8_rslora"),
    ({"quant_bits": 16, "lora_r": 4}, "fp16_r4"),
    ({"quant_bits": "8", "lora_r": 8}, None),  # not what training writes: fall back to the name
    ({}, None),
])
def test_variant_from_entry(entry, variant):
    assert T.variant_from_entry(entry) == variant


def test_variant_from_entry_agrees_with_the_registry():
    # one rule for "what is this run's variant": training's Entry.variant and ours must not drift apart
    from lora.recipe.registry import Entry

    shipped = json.loads((Path(P.REPO_ROOT) / "finetune_configs.json").read_text())
    template = next(v for k, v in shipped.items() if not k.startswith("_"))
    for bits in (4, 8, 16):
        for dora, rslora in ((False, False), (True, False), (False, True), (True, True)):
            e = Entry(**{**template, "lora_r": 8, "quant_bits": bits, "peft_use_dora": dora, "peft_use_rslora": rslora})
            assert T.variant_from_entry(e.model_dump(mode="json")) == e.variant


@pytest.mark.parametrize("name,variant", [
    ("sentiment_llama_3_1_8b_8bits_r8", "8bits_r8"),
    ("fp16_r8/ner_llama_3_1_8b_fp16_r8", "fp16_r8"),
    ("sentiment_llama_3_1_8b_8bits_r8_dora", "8bits_r8_dora"),
    ("8bits_r8_rslora/headline", "8bits_r8_rslora"),
    ("finer_4bits_r4-retry", "4bits_r4"),
    ("my_adapter", None),
    ("x18bits_r8", None),  # not a variant: glued to another word
])
def test_variant_from_name(name, variant):
    assert T.variant_from_name(name) == variant


def test_method_mapping_entry_then_name_then_path_then_other():
    rows = [
        adapter_row("sent_a", {}, entry={"quant_bits": 4, "lora_r": 4}),
        adapter_row("named_8bits_r8_dora", {}),
        adapter_row("plain", {}, path="lora_adapters/8bits_r8_rslora/plain"),
        adapter_row("mine", {}),
        # run.json wins over a misleading folder name
        adapter_row("fpb_8bits_r8", {}, entry={"quant_bits": 16, "lora_r": 8}),
    ]
    got = [T.method_of(r) for r in rows]
    assert got == [T.Method("4bits_r4", "run.json entry"), T.Method("8bits_r8_dora", "name"),
                   T.Method("8bits_r8_rslora", "path"), T.Method("other: mine", "no variant found"),
                   T.Method("fp16_r8", "run.json entry")]


def test_table_columns_and_placements():
    res = results_dict([
        base_row({"fpb": cls(0.5, 0.4)}),
        base_row({"fpb": cls(0.6, 0.5)}, name="base 3-shot", shots=3),
        adapter_row("a", {"fpb": cls(0.8, 0.7)}, entry={"quant_bits": 8, "lora_r": 8}),
        adapter_row("mine", {"fpb": cls(0.7, 0.6)}),
        adapter_row("r4", {"fpb": cls(0.7, 0.6)}, entry={"quant_bits": 16, "lora_r": 4}),
    ])
    table = T.build_table(res, PUBLISHED)
    headers = [c.header for c in table.columns]
    assert headers == ["base (0-shot)", "base (3-shot)", *P.METHODS, "other: mine", "fp16_r4"]
    # FinLoRA has no fp16_r8 nor anything for our own variants: no published column beside them
    assert [c.published_method for c in table.columns] == ["base", "base", "8bits_r8", "4bits_r4", "8bits_r8_dora",
                                                           "8bits_r8_rslora", None, None, None]
    assert "a → 8bits_r8 (run.json entry; base model meta-llama/Llama-3.1-8B-Instruct)" in table.placements
    assert any(p.startswith("base 3-shot → base (3-shot)") for p in table.placements)
    md = R.to_markdown(table, ["provenance line"])
    assert "| base (0-shot) | base (3-shot) | 8bits_r8 |" in md


# ---------------------------------------------------------------- numbers: one scale, ours − published


def test_accuracy_in_percent_and_difference_in_points():
    res = results_dict([base_row({"fpb": cls(0.5, 0.6)}),
                        adapter_row("a", {"fpb": cls(0.9, 0.95)}, entry={"quant_bits": 8, "lora_r": 8})])
    table = T.build_table(res, PUBLISHED)
    acc = line(table, "fpb", "accuracy")
    [ours] = acc.cells["8bits_r8"]
    assert ours.value == pytest.approx(90.0) and (ours.low, ours.high) == (pytest.approx(85.0), pytest.approx(95.0))
    assert T.difference(ours, acc.published["8bits_r8"]) == pytest.approx(90.0 - 85.64)
    assert R.cell_texts(acc, column(table, "8bits_r8")) == ["90.00 [85.00, 95.00] · pub 85.64 · Δ +4.36"]
    assert R.cell_texts(acc, column(table, "base@0")) == ["50.00 [45.00, 55.00] · pub 68.73 · Δ -18.73"]
    f1 = line(table, "fpb", "f1_weighted")  # F1 stays 0-1, as FinLoRA prints it
    assert R.cell_texts(f1, column(table, "8bits_r8")) == ["0.950 [0.850, 1.050] · pub 0.922 · Δ +0.028"]
    # FinLoRA's numbers show where we have no such adapter
    assert R.cell_texts(acc, column(table, "4bits_r4")) == ["–"]
    rows = list(csv.DictReader(io.StringIO(R.to_csv(table, ["p"]).split("\n", 1)[1])))
    got = [r for r in rows if r["row"] == "a" and r["metric"] == "accuracy"][0]
    assert (got["scale"], got["ours"], got["published"], got["difference"], got["published_in_ci"]) == (
        "percent", "90", "85.64", "4.36", "true")  # 85.64 is inside [85, 95]
    assert got["published_model"] == "llama_3_1_8b_instruct_lora_8bits_r8"
    only_pub = [r for r in rows if r["column"] == "8bits_r8" and r["row"] == "" and r["task"] == "fpb"]
    assert only_pub == []  # the 8bits_r8 column has our row: no extra published-only line


def test_missing_published_number():
    res = results_dict([base_row({"mytask": cls(0.5), "formula": cls(0.2)}),
                        adapter_row("x_fp16_r8", {"formula": cls(0.3)})])
    table = T.build_table(res, PUBLISHED)
    my = line(table, "mytask", "accuracy")
    assert my.published == {} and my.published_task is None
    assert R.cell_texts(my, column(table, "base@0")) == ["50.00 [45.00, 55.00]"]
    formula = line(table, "formula", "accuracy")
    assert R.cell_texts(formula, column(table, "fp16_r8")) == ["30.00 [25.00, 35.00]"]  # FinLoRA has no fp16_r8
    # numeric tasks have no weighted F1 of ours: no F1 line, though FinLoRA prints one
    assert [x.metric for x in table.lines if x.task == "formula"] == ["accuracy"]
    rows = list(csv.DictReader(io.StringIO(R.to_csv(table, []))))
    mine = [r for r in rows if r["task"] == "mytask"]
    assert [(r["published"], r["difference"], r["finlora_task"]) for r in mine] == [("", "", "")]


# ---------------------------------------------------------------- BERTScore vs ROUGE


def test_rouge_never_beside_bertscore():
    res = results_dict([base_row({"xbrl_term": text(0.3)}),
                        adapter_row("t", {"xbrl_term": text(0.4)}, entry={"quant_bits": 8, "lora_r": 8})])
    table = T.build_table(res, PUBLISHED)
    assert [x.metric for x in table.lines if x.task == "xbrl_term"] == ["rougeL"]
    rouge = line(table, "xbrl_term", "rougeL")
    assert rouge.label == "ROUGE-L" and rouge.published == {}
    assert R.cell_texts(rouge, column(table, "8bits_r8")) == ["0.400 [0.380, 0.420]"]
    assert any("no bertscore_f1" in n and "never compared" in n for n in table.notes)
    md = R.to_markdown(table, [])
    assert "| xbrl_term (XBRL Term) | ROUGE-L |" in md and "0.599" not in md and "0.574" not in md


def test_bertscore_compared_when_present():
    res = results_dict([base_row({"xbrl_term": text(0.3, 0.55)}),
                        adapter_row("t", {"xbrl_term": text(0.4, 0.62)}, entry={"quant_bits": 8, "lora_r": 8})],
                       bertscore_model="/enc/finbert")
    table = T.build_table(res, PUBLISHED)
    assert [x.metric for x in table.lines if x.task == "xbrl_term"] == ["bertscore_f1", "rougeL"]
    bert = line(table, "xbrl_term", "bertscore_f1")
    assert R.cell_texts(bert, column(table, "8bits_r8")) == ["0.620 [0.610, 0.630] · pub 0.599 · Δ +0.021"]
    assert line(table, "xbrl_term", "rougeL").published == {}  # ROUGE-L still has no published number
    assert any("/enc/finbert" in n and "ProsusAI/finbert" in n for n in table.notes)


# ---------------------------------------------------------------- duplicates, errors, header


def test_two_adapters_in_one_cell_are_both_shown():
    res = results_dict([
        base_row({"fpb": cls(0.5)}),
        adapter_row("sent_a", {"fpb": cls(0.8)}, entry={"quant_bits": 8, "lora_r": 8}),
        adapter_row("sent_b_8bits_r8", {"fpb": cls(0.82)}),
    ])
    table = T.build_table(res, PUBLISHED)
    acc = line(table, "fpb", "accuracy")
    assert [e.row for e in acc.cells["8bits_r8"]] == ["sent_a", "sent_b_8bits_r8"]
    texts = R.cell_texts(acc, column(table, "8bits_r8"))
    assert texts == ["sent_a: 80.00 [75.00, 85.00] · pub 85.64 · Δ -5.64",
                     "sent_b_8bits_r8: 82.00 [77.00, 87.00] · pub 85.64 · Δ -3.64"]
    md = R.to_markdown(table, [])
    assert "| ↳ |  |  |  | sent_b_8bits_r8: 82.00" in md  # the second one on an extra line
    rows = list(csv.DictReader(io.StringIO(R.to_csv(table, []))))
    assert sorted(r["row"] for r in rows if r["column"] == "8bits_r8") == ["sent_a", "sent_b_8bits_r8"]
    panel = R.plot_panels(table)[0]
    assert [p.label for p in panel.points if p.label.startswith("8bits_r8")] == ["8bits_r8\nsent_a",
                                                                                 "8bits_r8\nsent_b_8bits_r8"]


def test_error_cells_and_error_rows_are_reported_not_dropped():
    res = results_dict([
        base_row({"fpb": {"error": "evaluation failed: boom"}}),
        {**adapter_row("late", {}), "error": "training did not finish (run.json status: running)"},
    ])
    table = T.build_table(res, PUBLISHED)
    acc = line(table, "fpb", "accuracy")
    assert R.cell_texts(acc, column(table, "base@0")) == ["error · pub 68.73"]
    assert any(n.startswith("Not in the table: late (adapter row): training did not finish") for n in table.notes)
    rows = list(csv.DictReader(io.StringIO(R.to_csv(table, []))))
    assert [r["error"] for r in rows if r["row"] == "base"] == ["evaluation failed: boom"]


def test_header_says_base_model_scoring_and_limit():
    small = results_dict([base_row({"fpb": cls(0.5)}, base_model="models/base_model/smollm2-135m-instruct")],
                         limit=20)
    header = " ".join(T.build_table(small, PUBLISHED).header)
    assert "smollm2-135m-instruct" in header and "not a like-for-like comparison" in header
    assert "**standard**" in header and "--limit 20" in header
    llama = results_dict([base_row({"fpb": cls(0.5)})], scoring="finlora")
    header = " ".join(T.build_table(llama, PUBLISHED).header)
    assert "not a like-for-like" not in header and "**finlora**" in header and "every row" in header


# ---------------------------------------------------------------- published CSV


def test_shipped_published_csv_maps_every_task_and_method():
    published = P.read_published()
    assert {t for t, _ in published} == set(P.PUBLISHED_TASKS.values())
    assert {m for _, m in published} == set(P.PUBLISHED_MODELS.values())
    assert len(published) == 19 * 5
    assert published[("fpb", "base")] == {"accuracy": 68.73, "f1_weighted": 0.677}
    assert published[("xbrl_term", "8bits_r8_rslora")] == {"bertscore_f1": 0.630}  # accuracy blank there
    assert published[("cfa_level2", "4bits_r4")] == {"accuracy": 83.12, "f1_weighted": 0.835}


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="shared FinLoRA data not present")
def test_shipped_published_csv_is_the_shared_copy_unchanged():
    assert P.PUBLISHED_CSV.read_bytes() == SHARED_CSV.read_bytes()


@pytest.mark.parametrize("content,needle", [
    ("task,model,acc\n", "header must be"),
    ("task,model,accuracy_pct,f1_or_score\nFPB,llama_3_1_8b_instruct_base,high,0.6\n", ":2: 'high' is not a number"),
    ("task,model,accuracy_pct,f1_or_score\nFPB,llama_3_1_8b_instruct_base,1\n", ":2: expected 4 fields"),
])
def test_bad_published_csv(content, needle):
    with pytest.raises(P.UserError, match=needle):
        P.parse_published(content, "pub.csv")


# ---------------------------------------------------------------- edge: files, PNG, bad input


def write_results(out: Path, obj) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return out


def test_report_writes_table_csv_png(tmp_path, capsys):
    res = results_dict([
        base_row({"fpb": cls(0.5, 0.4), "xbrl_term": text(0.3)}),
        adapter_row("sent", {"fpb": cls(0.8, 0.75), "xbrl_term": text(0.35)}, entry={"quant_bits": 8, "lora_r": 8}),
    ])
    out = write_results(tmp_path / "out", res)
    assert main(["report", str(out), "--layout", "finlora"]) == 0
    printed = capsys.readouterr().out
    md = (out / F.TABLE_MD).read_text()
    assert printed == md
    assert f"Generated by `python -m eval report {out} --layout finlora`" in md
    assert "80.00 [75.00, 85.00] · pub 85.64 · Δ -5.64" in md  # from the shipped published CSV
    text_csv = (out / F.TABLE_CSV).read_text().splitlines()
    assert text_csv[0].startswith("# Generated by `python -m eval report") and text_csv[1].startswith("# Published")
    assert text_csv[2].split(",") == R.CSV_COLUMNS  # so pandas.read_csv(path, skiprows=2) reads it
    png = (out / F.TASKS_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert b"python -m eval report" in png  # the command in the PNG's text chunk
    assert sorted(p.name for p in out.iterdir()) == ["finlora_table.csv", "finlora_table.md", "finlora_tasks.png",
                                                    "results.json"]  # no temp files left behind


def test_png_with_many_panels_and_an_empty_one():
    from eval.plots import tasks_png

    panels = [R.Panel(f"t{i}", "accuracy %", [R.Point("base (0-shot)\nrow $x", 50.0, 40.0, 60.0, 68.7, True),
                                               R.Point("8bits_r8", None, None, None, 85.6, False)], 100.0)
              for i in range(7)] + [R.Panel("empty", "ROUGE-L", [], 1.0)]
    png = tasks_png(panels, "title $", footer="made by `python -m eval report /tmp/$HOME_x`")  # a lone $ is text
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def err_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unknown_layout_suggests_close_match(tmp_path, capsys):
    out = write_results(tmp_path / "out", results_dict([base_row({"fpb": cls(0.5)})]))
    assert main(["report", str(out), "--layout", "finlra"]) == 2
    line = err_line(capsys)
    assert "unknown layout 'finlra'" in line and "did you mean 'finlora'" in line
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_out_without_results_json(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "missing"):
        assert main(["report", str(out)]) == 2
        assert f"{out / 'results.json'} not found" in err_line(capsys)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"schema": 2, "tasks": {}, "rows": [], "settings": {}}', "schema 2 is not 1"),
    ('{"schema": 1, "tasks": {}, "rows": {}, "settings": {}}', "'rows' missing or not a list"),
    (json.dumps(results_dict([{"name": "x", "kind": "base", "results": {"nosuch": {}}}])), "task not in 'tasks'"),
    (json.dumps(results_dict([base_row({"fpb": {"metrics": {"accuracy": "high"}}})])), "metrics.accuracy"),
    (json.dumps(results_dict([base_row({"fpb": {"metrics": {"ci": {"accuracy": [0.1]}}}})])), "metrics.ci.accuracy"),
    (json.dumps(results_dict([base_row({}, shots=-1)])), "'shots'"),
    (json.dumps(results_dict([base_row({})], scoring=3)), "settings.scoring"),
    (json.dumps({**results_dict([]), "command": "python -m eval"}), "'command' is not a list"),
    ("[" * 100_000, "not valid JSON"),
])
def test_results_json_not_ours(tmp_path, capsys, content, needle):
    out = write_results(tmp_path / "out", content)
    assert main(["report", str(out)]) == 2
    line = err_line(capsys)
    assert str(out / "results.json") in line and needle in line


def test_results_from_build_results_pass_the_check(tmp_path):
    # the contract with eval/report.py: what it writes is what this layout reads
    from eval import report
    from eval.discovery import Adapter, BaseModel, Group
    from eval.fixtures import run_record
    from eval.run_plan import Row, Settings
    from eval.tasks import load_registry, load_task_data

    group = Group(BaseModel("models/base_model/smollm2-135m-instruct", "/abs/base"), [])
    run = run_record("sent", entry={"quant_bits": 4, "lora_r": 4, "peft_use_dora": False})
    adapter = Adapter(name="sent", path=tmp_path / "sent", base_ref=LLAMA, run=run.to_json())
    datas = {"fpb": load_task_data(load_registry()["fpb"])}
    rows = [Row("base", "base", group, results={"fpb": cls(0.5, 0.4)}),
            Row("sent", "adapter", group, adapter=adapter, results={"fpb": {**cls(0.8, 0.7), "base_row": "base"}})]
    res = json.loads(json.dumps(report.build_results(rows, datas, [], Settings(out=tmp_path, limit=10), {}, 1.0)))
    assert T.results_problem(res) is None
    table = T.build_table(res, PUBLISHED)
    assert any(p.startswith("sent → 4bits_r4 (run.json entry") for p in table.placements)


def test_under_finlora_scoring_the_f1_beside_finloras_is_f1_finlora():
    """FinLoRA prints its raw-output F1; our run under --scoring finlora stores that as f1_finlora, and sklearn's
    f1_weighted beside it would compare two different rules."""
    res = cls(0.5, f1=0.40)
    res["metrics"]["f1_finlora"] = 0.62
    standard = T.build_table(results_dict([base_row({"fpb": res})]), PUBLISHED)
    finlora = T.build_table(results_dict([base_row({"fpb": res})], scoring="finlora"), PUBLISHED)
    assert R.cell_texts(line(standard, "fpb", "f1_weighted"), column(standard, "base@0"))[0].startswith("0.400 ")
    assert R.cell_texts(line(finlora, "fpb", "f1_weighted"), column(finlora, "base@0"))[0].startswith("0.620 ")
    assert any("f1_finlora" in n for n in finlora.notes) and not any("f1_finlora" in n for n in standard.notes)
