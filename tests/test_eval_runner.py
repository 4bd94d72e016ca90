"""End to end on the bundled SmolLM2-135M with throwaway adapters (slow: generates on CPU, ~1-2 min).

    .venv/bin/python -m pytest tests/test_eval_run.py -q -m slow
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

pytestmark = pytest.mark.slow

TASKS = "fpb,formula"
LIMIT = 3


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from eval.fixtures import make_tiny_adapter
    from lora.base_model import ensure_base_model

    base = ensure_base_model(quiet=True)
    root = tmp_path_factory.mktemp("lora_adapters")
    make_tiny_adapter(root / "tiny_a", base, seed=1)
    make_tiny_adapter(root / "tiny_b", base, seed=2, scale=0.05)
    shutil.copytree(root / "tiny_a", root / "unfinished")
    run = json.loads((root / "unfinished" / "run.json").read_text())
    run.update(name="unfinished", status="running")
    (root / "unfinished" / "run.json").write_text(json.dumps(run))
    shutil.copytree(root / "tiny_a", root / "broken")
    run.update(name="broken", status="complete")
    (root / "broken" / "run.json").write_text(json.dumps(run))
    (root / "broken" / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    return base, root


@pytest.fixture(scope="module")
def first_run(adapters, tmp_path_factory):
    import eval.engine as engine
    from eval.cli import main

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


def test_rerun_skips_finished_pairs_and_redoes_a_lost_one(first_run, adapters, capsys):
    import eval.engine as engine
    from eval.cli import main

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
    for b, a in zip(before["rows"], after["rows"]):
        for task in b["results"]:
            assert a["results"][task]["metrics"] == b["results"][task]["metrics"]


def test_generation_does_not_depend_on_batching(adapters):
    import json as _json

    from eval.engine import generate, load_base
    from lora.prompts import PROMPT_FORMATS, apply

    base, _ = adapters
    loaded = load_base(str(base))
    with open("data/test/fpb_test.jsonl", encoding="utf-8") as f:
        prompts = [apply(PROMPT_FORMATS["chatml"], _json.loads(next(f))["context"]) for _ in range(3)]
    one, _ = generate(loaded.model, loaded.tokenizer, prompts, 6, True, batch_size=1)
    three, stats = generate(loaded.model, loaded.tokenizer, prompts, 6, True, batch_size=3)
    assert one == three
    assert all("\n" not in o.strip() for o in three)  # stopped at the newline after the answer
