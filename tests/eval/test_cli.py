"""finlora eval / python -m eval (lora/cli/verbs/eval.py, eval/request.py): bad input -> one `error:` line and exit 2 with nothing written, `score`, `--list-tasks`, and
the entry points that must not import torch (fast: no model is loaded, adapters are fake folders).

    .venv/bin/python -m pytest tests/eval/test_cli.py -q
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval.fixtures import BUNDLED_REF, SIX_TASKS, run_record, six_task_registry
from eval.fixtures import make_fake_adapter as fake_adapter
from lora.cli.shims import eval_main as main

REPO = Path(__file__).resolve().parents[2]
FINLORA_CONFIGS = REPO.parent / "shared" / "data" / "finlora" / "adapter_configs"


def err_line(capsys) -> str:
    """Bad input prints exactly one line on stderr, and it starts with `error: `."""
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def no_run(monkeypatch):
    """Fails the test if evaluation starts: bad input must be refused before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("evaluation started")

    monkeypatch.setattr("lora.cli.verbs.eval.run_pairs", refuse)


# ---------------------------------------------------------------- bad input -> exit 2, nothing written


def test_folder_without_adapters(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--tasks", "fpb"]) == 2
    line = err_line(capsys)
    assert str(tmp_path / "empty") in line and "no adapters" in line


def test_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope" in err_line(capsys)


def test_unknown_task_lists_known(tmp_path, capsys):
    fake_adapter(tmp_path / "a", run=run_record("a"))
    assert main([str(tmp_path / "a"), "--tasks", "fpb,nosuch"]) == 2
    line = err_line(capsys)
    assert "nosuch" in line and "fpb" in line and "financebench" in line


@pytest.mark.parametrize("tasks", [",", " , ", ""])
def test_tasks_option_naming_nothing_is_an_error(tmp_path, capsys, no_run, tasks):
    # before: an empty list meant "every task", a full evaluation nobody asked for
    out = tmp_path / "out"
    assert main(["--base-model", BUNDLED_REF, "--tasks", tasks, "--out", str(out)]) == 2
    assert "names no task" in err_line(capsys)
    assert not out.exists()


def _registry(tmp_path: Path, data: str) -> Path:
    reg = tmp_path / "tasks.json"
    reg.write_text(json.dumps({"mini": {"data": data, "kind": "classification", "labels": ["negative", "positive"]}}))
    return reg


def test_missing_task_data(tmp_path, capsys):
    # named with --tasks: bad input, as always
    fake_adapter(tmp_path / "a", run=run_record("a"))
    reg = _registry(tmp_path, "missing.jsonl")
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg), "--tasks", "mini"]) == 2
    line = err_line(capsys)
    assert "missing.jsonl" in line and "not found" in line
    # by default the absent task is skipped; with nothing left to evaluate that is one error line
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    line = err_line(capsys)
    assert line.startswith("error: no task to evaluate: task mini") and "missing.jsonl is not present" in line


def test_malformed_task_line(tmp_path, capsys):
    fake_adapter(tmp_path / "a", run=run_record("a"))
    (tmp_path / "mini.jsonl").write_text('{"context": "c", "target": "negative"}\n{"context": "c"\n')
    reg = _registry(tmp_path, "mini.jsonl")
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    assert f"{tmp_path / 'mini.jsonl'}:2:" in err_line(capsys)
    (tmp_path / "mini.jsonl").write_text('{"context": "c", "target": "negative"}\n{"context": "c", "target": "meh"}\n')
    assert main([str(tmp_path / "a"), "--tasks-json", str(reg)]) == 2
    line = err_line(capsys)
    assert ":2:" in line and "meh" in line


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[" * 100_000, b'{"t": {"data": "x", "kind": "vibes"}}'])
def test_bad_registry_exits_2(tmp_path, capsys, content):
    reg = tmp_path / "tasks.json"
    reg.write_bytes(content)
    assert main(["--tasks-json", str(reg), "--list-tasks"]) == 2
    assert str(reg) in err_line(capsys)


@pytest.mark.parametrize("path", ["~nosuchuser_eval/t.json", "x" * 5000, "."])
def test_hostile_registry_paths_exit_2(capsys, path):
    assert main(["--tasks-json", path, "--list-tasks"]) == 2
    err_line(capsys)


@pytest.mark.parametrize("base", ["/nope", "someone/not-cached-model", "~nosuchuser_eval/m"])
def test_missing_base_model_exits_2_before_anything(tmp_path, capsys, no_run, base):
    fake_adapter(tmp_path / "a", run=run_record("a"))
    out = tmp_path / "out"
    for argv in (["--base-model", base], [str(tmp_path / "a"), "--base-model", base]):
        assert main([*argv, "--tasks", "fpb", "--out", str(out)]) == 2
        line = err_line(capsys)
        assert line.startswith("error: --base-model:") and base.lstrip("~") in line
        assert not out.exists()


@pytest.mark.parametrize("below", [None, "sub"])  # --out is a file, or a folder under a file
def test_unwritable_out_exits_2_before_generation(tmp_path, capsys, no_run, below):
    (tmp_path / "out").write_text("a file")
    out = tmp_path / "out" / below if below else tmp_path / "out"
    assert main(["--base-model", BUNDLED_REF, "--tasks", "fpb", "--limit", "1", "--out", str(out)]) == 2
    line = err_line(capsys)
    assert f"--out {out}" in line and "not a writable folder" in line


def test_bertscore_model_must_be_a_local_folder(tmp_path, capsys, no_run):
    for value in (str(tmp_path / "nope"), "roberta-large", "~nosuchuser_eval/enc"):
        assert main(["--base-model", BUNDLED_REF, "--bertscore-model", value, "--out", str(tmp_path / "o")]) == 2
        assert "--bertscore-model" in err_line(capsys)


def test_list_tasks(capsys):
    assert main(["--list-tasks"]) == 0
    out = capsys.readouterr().out
    for t in ("fpb", "tfns", "ner", "formula", "xbrl_term", "financebench"):
        assert t in out
    assert "classification" in out and "headline=rougeL" in out


def test_dry_run_plans_without_writing(tmp_path, capsys):
    fake_adapter(tmp_path / "good", run=run_record("good"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("{not json")
    out = tmp_path / "out"
    assert main([str(tmp_path), "--tasks", "fpb", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split()[1] for line in printed.splitlines() if line.startswith(("  base ", "  adapter "))]
    assert rows == ["base", "good", "bad"]  # the broken adapter adds its error row, no base row of its own
    assert "good × fpb: prompt chatml" in printed
    assert not out.exists()


# ---------------------------------------------------------------- default task selection and --shots (dry run)


def _finlora_layout(root: Path) -> Path:
    fake_adapter(root / "sentiment_smollm2_cpu",
                 run=run_record("sentiment_smollm2_cpu", entry={"dataset_path": "data/train/fpb_train.jsonl"}))
    fake_adapter(root / "8bits_r8" / "xbrl_term_llama_3_1_8b_8bits_r8")  # no run.json: the folder name says
    fake_adapter(root / "8bits_r8" / "finer_llama_3_1_8b_8bits_r8")  # its tasks are not in the registry
    fake_adapter(root / "mystery", run=run_record("mystery", entry={"dataset_path": "data/train/custom.jsonl"}))
    return root


def test_dry_run_default_selection_shows_map_families_and_skips(tmp_path, capsys):
    root = _finlora_layout(tmp_path / "lora_adapters")
    assert main([str(root), "--base-model", BUNDLED_REF, "--dry-run", "--tasks-json", str(six_task_registry(tmp_path))]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "  sentiment: fpb, fiqa, tfns, nwgi" in out and "  finer: xbrl_finer, xbrl_fnxl" in out
    lines = [line.strip() for line in out.splitlines()]
    assert ("adapter sentiment_smollm2_cpu  tasks: fpb, tfns  "
            "(family sentiment, from run.json dataset_path fpb_train.jsonl)") in lines
    assert ("adapter 8bits_r8/xbrl_term_llama_3_1_8b_8bits_r8  tasks: xbrl_term  "
            "(family xbrl_term, from name xbrl_term_llama_3_1_8b_8bits_r8)") in lines
    assert ("adapter 8bits_r8/finer_llama_3_1_8b_8bits_r8  tasks: (none present)  "
            "(family finer, from name finer_llama_3_1_8b_8bits_r8)") in lines
    assert ("adapter mystery  tasks: fpb, tfns, ner, formula, xbrl_term, financebench  (family unknown: run.json "
            "dataset_path custom.jsonl; name mystery matches no family; every task present)") in lines
    pairs = {tuple(line.split(":")[0].split(" × ")) for line in lines if " × " in line}
    assert ("sentiment_smollm2_cpu", "fpb") in pairs and ("sentiment_smollm2_cpu", "ner") not in pairs
    assert not any(row.startswith("8bits_r8/finer") for row, _ in pairs)
    # the base rows take the union of their adapters' tasks (one per prompt format)
    assert {t for row, t in pairs if row == "base [finlora_inst]"} == {"xbrl_term"}
    assert {t for row, t in pairs if row == "base [chatml]"} == {"fpb", "tfns", "ner", "formula", "xbrl_term",
                                                                  "financebench"}
    notes = captured.err.splitlines()
    assert sorted(notes) == sorted(f"note: skipped task {t} ({why}) is not in the task registry" for t, why in [
        ("xbrl_finer", "family finer"), ("xbrl_fnxl", "family finer"),
        ("fiqa", "family sentiment"), ("nwgi", "family sentiment")])


def test_absent_data_file_is_one_note_naming_it_and_tasks_override(tmp_path, capsys):
    reg = six_task_registry(tmp_path)
    registry = json.loads(reg.read_text())
    registry["fiqa"] = {**registry["tfns"], "data": str(tmp_path / "fiqa_test.jsonl")}
    reg.write_text(json.dumps(registry))
    fake_adapter(tmp_path / "ad" / "sentiment_a")
    fake_adapter(tmp_path / "ad" / "sentiment_b")
    assert main([str(tmp_path / "ad"), "--base-model", BUNDLED_REF, "--tasks-json", str(reg), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines().count(
        f"note: skipped task fiqa (family sentiment): data file {tmp_path / 'fiqa_test.jsonl'} is not present") == 1
    assert "sentiment_a × tfns" in captured.out and "sentiment_a × fiqa" not in captured.out
    # --tasks: every adapter × the named tasks, whatever its family
    assert main([str(tmp_path / "ad"), "--base-model", BUNDLED_REF, "--tasks-json", str(reg), "--tasks", "ner",
                 "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert {line.strip() for line in captured.out.splitlines() if " × " in line} == {
        "base × ner: prompt finlora_inst", "sentiment_a × ner: prompt finlora_inst",
        "sentiment_b × ner: prompt finlora_inst"}
    assert "tasks per adapter family" not in captured.out and captured.err == ""


def test_base_alone_gets_every_present_task_and_shots_are_shown(tmp_path, capsys):
    reg = six_task_registry(tmp_path)
    assert main(["--base-model", BUNDLED_REF, "--dry-run", "--shots", "3", "--limit", "4", "--tasks-json", str(reg)]) == 0
    out = capsys.readouterr().out
    assert "  base    base 3-shot" in out
    for t in ("fpb", "tfns", "ner", "formula", "xbrl_term", "financebench"):
        assert f"base 3-shot × {t}: prompt finlora_inst, 3-shot" in out
    assert "shots fpb: 3 per row from train file data/train/fpb_train.jsonl (3628 examples), seed 0; " \
           "scored rows n=4" in out
    assert out.count(" × ") == len(SIX_TASKS)
    assert "shots tfns: 3 per row from test rows [" in out and "held out of every row's scoring" in out


@pytest.mark.parametrize("argv,needle", [
    (["--shots", "-1"], "error: --shots -1: must be 0 or a positive integer"),
    (["--shots", "three"], "error: argument --shots: invalid int value: 'three'"),
    (["--shots", "2.5"], "error: argument --shots: invalid int value: '2.5'"),
    (["--shots", "87", "--tasks", "financebench"],
     "error: --shots 87: task financebench has only 86 examples in its train file data/train/financebench_train.jsonl"),
    (["--shots", "2388", "--tasks", "tfns"], "error: --shots 2388: task tfns has no train file and 2388 test row(s)"),
    (["--shots", "1", "--no-base", "{adapter}"], "error: --shots gives the base row examples; with --no-base"),
])
def test_bad_shots_exit_2_before_anything(tmp_path, capsys, no_run, argv, needle):
    adapter = fake_adapter(tmp_path / "a", run=run_record("a"))
    out = tmp_path / "out"
    argv = [a.format(adapter=adapter) for a in argv]
    reg = six_task_registry(tmp_path)
    assert main(["--base-model", BUNDLED_REF, "--out", str(out), "--tasks-json", str(reg), *argv]) == 2
    assert err_line(capsys).startswith(needle)
    assert not out.exists()


# ---------------------------------------------------------------- no torch on the light paths


LIGHT_PATHS = {
    "help": ["--help"],
    "list-tasks": ["--list-tasks"],
    "dry-run": ["{adapter}", "--base-model", BUNDLED_REF, "--tasks", "fpb,formula", "--dry-run"],
    "dry-run-default-tasks-shots": ["{adapter}", "--base-model", BUNDLED_REF, "--shots", "3", "--dry-run"],
    "score": ["score", "--task", "fpb", "--predictions", "{preds}"],
    "score-help": ["score", "--help"],
}


def run_in_fresh_python(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m eval ARGV` in a new interpreter; its last stdout line is "HEAVY <heavy modules imported> RC <rc>"."""
    code = (
        "import sys\n"
        "from lora.cli.shims import eval_main as main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n    rc = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print('HEAVY', ','.join(heavy), 'RC', rc)\n"
    )
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("name", list(LIGHT_PATHS))
def test_light_paths_import_no_torch(tmp_path, name):
    adapter = fake_adapter(tmp_path / "a", run=run_record("a"))
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"output": "negative", "target": "negative"}\n')
    argv = [a.format(adapter=adapter, preds=preds) for a in LIGHT_PATHS[name]]
    done = run_in_fresh_python(argv)
    last = done.stdout.strip().splitlines()[-1]
    assert last == "HEAVY  RC 0", (last, done.stderr[-2000:])


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


# ---------------------------------------------------------------- report (FinLoRA layout): no torch either


@pytest.mark.parametrize("argv", [["report", "--help"], ["report", "{out}", "--layout", "finlora"]])
def test_report_imports_no_torch(tmp_path, argv):
    out = tmp_path / "out"
    out.mkdir()
    row = {"name": "base", "kind": "base", "base_model": BUNDLED_REF, "error": None, "adapter": None,
           "results": {"fpb": {"metrics": {"n": 4, "accuracy": 0.5, "ci": {"accuracy": [0.0, 1.0]}}}}}
    (out / "results.json").write_text(json.dumps({
        "schema": 1, "settings": {"limit": 4}, "rows": [row],
        "tasks": {"fpb": {"kind": "classification", "headline": "accuracy"}}}))
    done = run_in_fresh_python([a.format(out=out) for a in argv])
    assert done.stdout.strip().splitlines()[-1] == "HEAVY  RC 0", done.stderr[-2000:]
    if argv[1] != "--help":
        assert (out / "finlora_tasks.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- --precision, --prefix-cache


def test_bf16_on_a_cpu_without_it_exits_2_before_anything(tmp_path, capsys, no_run, monkeypatch):
    import lora.core.precision

    monkeypatch.setattr("eval.request.cpu_facts", lambda: lora.core.precision.CpuFacts(False, "faked"))
    out = tmp_path / "o"
    assert main(["--base-model", BUNDLED_REF, "--tasks", "fpb", "--precision", "bf16", "--out", str(out)]) == 2
    line = err_line(capsys)
    assert "--precision bf16" in line and "no bf16 matmul" in line and not out.exists()


def test_precision_with_base_quant_is_refused(tmp_path, capsys, no_run):
    argv = ["--base-model", BUNDLED_REF, "--tasks", "fpb", "--base-quant", "8", "--precision", "fp32"]
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    assert "--base-quant 8 sets the dtype" in err_line(capsys)


def test_precision_and_prefix_cache_reach_the_settings(tmp_path, monkeypatch):
    import lora.core.precision

    seen = {}

    def fake_run(groups, datas, settings):
        seen["settings"] = settings
        return {"rows": []}, 0

    monkeypatch.setattr("eval.request.cpu_facts", lambda: lora.core.precision.CpuFacts(True, "faked"))
    monkeypatch.setattr("lora.cli.verbs.eval.run_pairs", fake_run)
    monkeypatch.setattr("lora.cli.verbs.eval.write_results", lambda results, out: None)
    argv = ["--base-model", BUNDLED_REF, "--tasks", "fpb", "--limit", "1", "--out", str(tmp_path / "o")]
    assert main(argv + ["--prefix-cache", "off"]) == 0
    s = seen["settings"]
    assert s.prefix_cache is False and s.precision.record["used"] == "bf16" and s.precision.fingerprint == "bf16"
    assert main(argv + ["--precision", "fp32"]) == 0
    s = seen["settings"]
    assert s.prefix_cache is None and s.precision.record["used"] == "fp32" and s.precision.fingerprint is None
