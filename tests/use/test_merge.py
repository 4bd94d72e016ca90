"""lora/use/merge.py: the plan (pure: rows, tolerance, chat template), bad input (exit 2, nothing written), and
real merges of seeded adapters on the bundled model (fp32 agrees 100%; DoRA and rsLoRA logits match;
a failed verification keeps nothing; --force replaces only after verification).

    .venv/bin/python -m pytest tests/use/test_merge.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.fixtures import make_fake_adapter, run_record
from lora.core.prompts import PROMPT_FORMATS, apply
from lora.use import merge
from lora.use.merge import VerifyRow, agreement, chat_template, pick_rows, verify_tasks
from tests.verb_support import verb_main, verb_plan

BUNDLED = "models/base_model/smollm2-135m-instruct"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _row(task: str, i: int) -> VerifyRow:
    return VerifyRow(task, i, f"p{i}", 10, True)


def test_rows_are_shared_round_robin_between_the_adapters_tasks():
    rows = pick_rows({"fpb": [_row("fpb", i) for i in range(5)], "tfns": [_row("tfns", i) for i in range(2)]}, 5)
    assert [(r.task, r.row_id) for r in rows] == [("fpb", 0), ("tfns", 0), ("fpb", 1), ("tfns", 1), ("fpb", 2)]


def test_tasks_fall_back_to_fpb_when_none_of_the_familys_files_exist():
    assert verify_tasks(("fpb", "fiqa", "absent"), {"fpb", "fiqa", "ner"}) == ("fpb", "fiqa")
    assert verify_tasks(("xbrl_finer",), {"fpb"}) == ("fpb",)
    assert verify_tasks((), {"fpb"}) == ("fpb",)


def test_agreement_counts_identical_answers():
    assert agreement(["a", "b ", "c", "d"], ["a", "b", "x", "d"]) == (0.75, [2])


def test_tolerance_is_exact_for_fp32_and_allows_16_bit_near_ties():
    assert merge.MIN_AGREEMENT["fp32"] == 1.0
    assert merge.MIN_AGREEMENT["bf16"] < 1.0


@pytest.mark.parametrize("fmt", sorted(PROMPT_FORMATS))
def test_chat_template_renders_the_training_prompt(fmt):
    from jinja2 import Template

    text = 'Is {revenue} "up"?\nYes.'
    tmpl = chat_template(PROMPT_FORMATS[fmt])
    render = Template(tmpl).render
    assert render(messages=[{"role": "user", "content": text}], eos_token="</s>") == apply(PROMPT_FORMATS[fmt], text)
    two = render(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                           {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}], eos_token="</s>")
    assert two == apply(PROMPT_FORMATS[fmt], "S\n\nq1") + "a1</s>" + apply(PROMPT_FORMATS[fmt], "q2")


# ---------------------------------------------------------------- bad input: exit 2, nothing written


def _fake(tmp_path: Path, status: str = "complete", base: str = BUNDLED, checkpoints=()) -> Path:
    folder = make_fake_adapter(tmp_path / "runs" / "sentiment_x", run=run_record("sentiment_x", status, base_model=base))
    for step in checkpoints:
        make_fake_adapter(folder / f"checkpoint-{step}")
    return folder


def _refused(argv, capsys, needle: str) -> str:
    assert verb_main("merge", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
    return err


def test_unfinished_run_names_the_newest_checkpoint_and_the_flag(tmp_path, capsys):
    folder = _fake(tmp_path, status="running", checkpoints=(5, 20, 10))
    out = tmp_path / "out"
    err = _refused([str(folder), "--out", str(out)], capsys, "checkpoint-20")
    assert "--checkpoint latest" in err and "status: running" in err
    assert not out.exists()


def test_unfinished_run_without_checkpoints_says_to_finish_it(tmp_path, capsys):
    folder = _fake(tmp_path, status="interrupted")
    _refused([str(folder), "--out", str(tmp_path / "o")], capsys, "saved no checkpoint")


def test_checkpoint_latest_picks_the_newest(tmp_path):
    folder = _fake(tmp_path, status="failed", checkpoints=(5, 20, 10))
    p = verb_plan("merge", [str(folder), "--checkpoint", "latest", "--verify-rows", "3"])
    assert p.adapter.weights_dir == folder / "checkpoint-20"
    assert p.out.name == "sentiment_x-checkpoint-20"
    assert p.tasks[0] == "fpb" and len(p.rows) == 3  # the sentiment family's tasks
    assert p.rows[0].prompt.startswith("<|im_start|>user\n")  # the training prompt (run.json: chatml)
    assert verb_plan("merge", [str(folder), "--checkpoint", "10", "--verify-rows", "1"]).adapter.weights_dir.name == "checkpoint-10"


def test_unknown_checkpoint_lists_the_ones_there(tmp_path, capsys):
    folder = _fake(tmp_path, status="failed", checkpoints=(5,))
    _refused([str(folder), "--checkpoint", "checkpoint-7"], capsys, "have checkpoint-5")


def test_base_not_available_locally_is_named(tmp_path, capsys):
    folder = _fake(tmp_path, base="acme/finance-70b-not-here")
    out = tmp_path / "out"
    _refused([str(folder), "--out", str(out)], capsys, "acme/finance-70b-not-here")
    assert not out.exists()


def test_non_empty_out_needs_force(tmp_path, capsys):
    folder = _fake(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _refused([str(folder), "--out", str(out)], capsys, "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("argv,needle", [
    (["../etc"], "no such adapter folder"),
    (["no_such_run_xyz"], "python finetune.py no_such_run_xyz"),
    (["bad name!"], "adapter name"),
])
def test_bad_names(argv, needle, capsys):
    _refused(argv, capsys, needle)


def test_verify_rows_must_be_positive(tmp_path, capsys):
    _refused([str(_fake(tmp_path)), "--verify-rows", "0"], capsys, "never saved unverified")


# ---------------------------------------------------------------- real merges (bundled model)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    pytest.importorskip("torch")
    from eval.fixtures import make_tiny_adapter

    root = tmp_path_factory.mktemp("merge_adapters")
    return {
        "lora": make_tiny_adapter(root / "sentiment_lora", BUNDLED, seed=1, scale=0.05, target_modules=ALL_LINEAR),
        "dora": make_tiny_adapter(root / "sentiment_dora", BUNDLED, seed=2, scale=0.05, use_dora=True),
        "rslora": make_tiny_adapter(root / "sentiment_rslora", BUNDLED, seed=3, scale=0.05, r=16, use_rslora=True),
    }


def _merged_record(out: Path) -> dict:
    return json.loads((out / "merge.json").read_text())


def test_fp32_merge_agrees_on_every_row_and_writes_a_standalone_model(adapters, tmp_path, capsys):
    out = tmp_path / "m"
    argv = [str(adapters["lora"]), "--out", str(out), "--dtype", "fp32", "--verify-rows", "4"]
    assert verb_main("merge", argv) == 0
    rec = _merged_record(out)
    v = rec["verification"]
    assert v["agreement"] == 1.0 and v["accepted"] and v["rows"] == 4
    assert v["rows_the_adapter_changes_vs_base"] > 0  # the check can tell the adapter from the base
    assert v["chat_template_matches_training_prompt"] is True
    assert rec["dtype"] == "fp32" and rec["command"] == "finlora merge " + " ".join(argv)
    assert len(rec["adapter"]["run_json_sha256"]) == 64
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    tok = json.loads((out / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|im_end|>"  # the fixed EOS, not the GGUF's <|im_start|>
    assert not list(tmp_path.glob(".m.*"))  # no temp folder left beside it
    assert "agreement 1.000 (4/4" in capsys.readouterr().err


def test_failed_verification_exits_1_and_keeps_nothing_even_with_force(tmp_path, monkeypatch, capsys):
    """The edge is faked (no model): a merge whose saved folder answers differently on 1 of 2 rows."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("previous merge")
    staged = []

    def fake_merge(p, staging):
        (staging / "model.safetensors").write_bytes(b"half-merged")
        staged.append(staging)
        return ["positive", "negative"], None, ["neutral", "neutral"], {}

    monkeypatch.setattr(merge, "merge_into", fake_merge)
    monkeypatch.setattr(merge, "verify", lambda p, staging, ref, q: merge.Outcome(*agreement(ref, ["positive", "neutral"])))
    assert verb_main("merge", [str(_fake(tmp_path)), "--out", str(out), "--force", "--verify-rows", "2"]) == 1
    assert "merge rejected: agreement 0.500 (1/2 rows identical; accepted >= 0.9" in capsys.readouterr().err
    assert staged and not staged[0].exists()  # the temp folder beside --out is gone
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # and the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "runs"]


@pytest.mark.parametrize("variant", ["dora", "rslora"])
def test_dora_and_rslora_merge_to_the_adapters_logits(adapters, variant, tmp_path):
    import torch

    from eval.engine import AdapterHost, load_base

    out = tmp_path / variant
    assert verb_main("merge", [str(adapters[variant]), "--out", str(out), "--dtype", "fp32", "--verify-rows", "2"]) == 0
    assert _merged_record(out)["verification"]["agreement"] == 1.0
    cfg = json.loads((adapters[variant] / "adapter_config.json").read_text())
    assert cfg["use_dora" if variant == "dora" else "use_rslora"] is True
    prompts = [apply(PROMPT_FORMATS["chatml"], t) for t in ("Sales fell 20%.", "Profit doubled in Q3.")]
    host = AdapterHost(load_base(BUNDLED))
    host.attach("a", str(adapters[variant]))
    merged = load_base(str(out))
    base_model = host.peft_model.get_base_model()
    for prompt in prompts:
        ids = merged.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            want = host.peft_model(input_ids=ids).logits
            got = merged.model(input_ids=ids).logits
            with host.peft_model.disable_adapter():
                base = base_model(input_ids=ids).logits
        # fp32 sums in another order merged than unmerged: 2.3e-3 was measured once (rslora, a run of the whole suite),
        # still 40x below what the adapter itself moves the logits
        assert (got - want).abs().max().item() < 5e-3
        assert (base - want).abs().max().item() > 1e-1  # the adapter moves the logits far more than the merge error


def test_4bit_trained_adapter_is_merged_into_the_full_precision_base(tmp_path):
    from eval.fixtures import make_tiny_adapter

    adapter = make_tiny_adapter(tmp_path / "sentiment_q4", BUNDLED, seed=4, scale=0.05, quant_bits=4)
    out = tmp_path / "m"
    assert verb_main("merge", [str(adapter), "--out", str(out), "--dtype", "fp32", "--verify-rows", "4"]) == 0
    v = _merged_record(out)["verification"]
    assert v["agreement"] == 1.0  # the merge itself, against the adapter on the fp32 base
    assert v["quant_agreement"] is not None and v["quant_reference"] == "adapter on the 4-bit base (as trained)"
