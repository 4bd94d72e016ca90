"""lora/use/infer.py: bad input (exit 2, nothing written), the one-line rule, and real answers on the bundled
model that match eval's generation for the training prompt (text, --file, --chat streamed from a pipe, --base).

    .venv/bin/python -m pytest tests/use/test_infer.py -q
"""
from __future__ import annotations

import json

import pytest

from eval.fixtures import make_fake_adapter, run_record
from lora.core.prompts import PROMPT_FORMATS, apply
from lora.use import infer
from tests.verb_support import verb_main

BUNDLED = "models/base_model/smollm2-135m-instruct"
QUESTION = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn."


def _refused(argv, capsys, needle: str) -> None:
    assert verb_main("infer", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err


def test_unfinished_run_names_the_checkpoint(tmp_path, capsys):
    folder = make_fake_adapter(tmp_path / "sentiment_x", run=run_record("sentiment_x", "running"))
    make_fake_adapter(folder / "checkpoint-3")
    _refused([str(folder), "hi"], capsys, "finlora infer")
    _refused([str(folder), "hi"], capsys, "--checkpoint latest (or --checkpoint checkpoint-3)")


def test_base_not_available_is_named(tmp_path, capsys):
    folder = make_fake_adapter(tmp_path / "x", run=run_record("x", base_model="/nowhere/llama-70b"))
    _refused([str(folder), "hi"], capsys, "/nowhere/llama-70b")


@pytest.mark.parametrize("extra,needle", [
    ([], "exactly one of"),
    (["hi", "--chat"], "exactly one of"),
    (["--file", "in.jsonl"], "go together"),
    (["hi", "--max-new-tokens", "0"], "positive"),
])
def test_modes_and_flags(tmp_path, capsys, extra, needle):
    folder = make_fake_adapter(tmp_path / "x", run=run_record("x"))
    _refused([str(folder), *extra], capsys, needle)


def test_bad_file_row_is_named_and_nothing_is_written(tmp_path, capsys):
    folder = make_fake_adapter(tmp_path / "x", run=run_record("x"))
    src = tmp_path / "in.jsonl"
    src.write_text('{"context": "ok"}\n{"question": "no context"}\n')
    out = tmp_path / "out.jsonl"
    _refused([str(folder), "--file", str(src), "--out", str(out)], capsys, f"{src}:2")
    assert not out.exists()
    out.write_text("mine\n")
    src.write_text('{"text": "ok"}\n')
    _refused([str(folder), "--file", str(src), "--out", str(out)], capsys, "--force")
    assert out.read_text() == "mine\n"


def test_one_line_rule_follows_the_adapters_tasks():
    assert infer.one_line_for("sentiment") is True  # classification tasks: eval stops at the newline
    assert infer.one_line_for("financebench") is False  # free text
    assert infer.one_line_for(None) is False  # unknown family: only EOS stops


# ---------------------------------------------------------------- real answers (bundled model)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    pytest.importorskip("torch")
    from eval.fixtures import make_tiny_adapter

    return make_tiny_adapter(tmp_path_factory.mktemp("infer") / "sentiment_demo", BUNDLED, seed=5, scale=0.1,
                             target_modules=("q_proj", "v_proj", "up_proj", "down_proj"))


@pytest.fixture(scope="module")
def expected(adapter):
    """What eval's engine answers for the training prompt, adapter on and off."""
    from eval.engine import AdapterHost, load_base
    from eval.generation import generate

    host = AdapterHost(load_base(BUNDLED))
    host.attach("a", str(adapter))
    tok = host.loaded.tokenizer
    prompts = [apply(PROMPT_FORMATS["chatml"], q) for q in (QUESTION, "Sales fell 20 percent.")]
    # One prompt at a time, as text and --chat ask; --file batches (left padding may move a near-tie).
    on = [generate(host.peft_model, tok, [p], 16, True, 1)[0][0].rstrip("\n") for p in prompts]
    batched, _ = generate(host.peft_model, tok, prompts, 16, True, 8)
    with host.peft_model.disable_adapter():
        off, _ = generate(host.peft_model, tok, prompts[:1], 16, True, 1)
    return on, off[0].rstrip("\n"), [o.rstrip("\n") for o in batched]


def test_text_and_base_answers_are_evals(adapter, expected, capsys):
    on, off, _ = expected
    assert on[0] != off  # the adapter changes this answer, so the two runs below are distinguishable
    assert verb_main("infer", [str(adapter), QUESTION, "--max-new-tokens", "16"]) == 0
    assert capsys.readouterr().out.strip() == on[0].strip()
    assert verb_main("infer", [str(adapter), "--base", QUESTION, "--max-new-tokens", "16"]) == 0
    assert capsys.readouterr().out.strip() == off.strip()


def test_file_batch_adds_output(adapter, expected, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"context": QUESTION, "id": 1}) + "\n" + json.dumps({"text": "Sales fell 20 percent."}) + "\n")
    assert verb_main("infer", [str(adapter), "--file", str(src), "--out", str(out), "--max-new-tokens", "16"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["output"] for r in rows] == expected[2]
    assert rows[0]["id"] == 1 and rows[1]["text"] == "Sales fell 20 percent."


def test_chat_streams_each_line_piped_into_the_command(adapter, expected):
    """The real command with stdin from a pipe: one answer line per question, the empty line ends it."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lora", "infer", str(adapter), "--chat", "--max-new-tokens", "16"],
                          input=QUESTION + "\nSales fell 20 percent.\n\nnot asked\n", capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [x.strip() for x in done.stdout.splitlines()] == [o.strip() for o in expected[0]]
