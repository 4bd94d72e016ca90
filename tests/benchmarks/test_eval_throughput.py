"""benchmarks/eval_throughput.py, its pure parts: FinLoRA's answer extraction, parsed-answer agreement and token counting.

    .venv/bin/python -m pytest tests/benchmarks/test_eval_throughput.py -q
"""
from __future__ import annotations

from benchmarks.eval_throughput import (
    agreement,
    finlora_answers,
    new_token_count,
)
from eval.finlora_scoring import answer_after_last_cue
from eval.tasks import TaskData, load_registry


def test_finlora_answer_is_the_stripped_text_after_the_last_cue_of_the_whole_sequence():
    decoded = [
        "Instruction: sentiment?\nInput: profits rose\nAnswer:  positive \n",  # prompt + generation
        "Answer: a\nAnswer: negative. Answer: neutral",  # the LAST cue wins, even one the model wrote
        "no cue at all ",  # FinLoRA returns the whole text, prompt included
    ]
    assert finlora_answers(decoded) == ["positive", "neutral", "no cue at all"]
    assert finlora_answers(["x### y"], delimiter="###") == ["y"]


def test_our_extraction_reads_the_same_answer_as_finloras_whole_sequence_split():
    prompt = "Instruction: What is the sentiment?\nInput: Sales fell .\nAnswer: "
    for generation in ("negative", " neutral\nAnswer: positive", ""):
        assert finlora_answers([prompt + generation]) == [answer_after_last_cue(prompt, generation)]


def test_new_tokens_stop_at_the_first_stop_or_pad_token():
    assert new_token_count([5, 6, 2, 2, 2], {2}) == 2
    assert new_token_count([5, 6, 7], {2}) == 3
    assert new_token_count([2, 5], {2}) == 0


def test_agreement_compares_parsed_labels_not_raw_text():
    task = load_registry()["fpb"]
    datas = {"fpb": TaskData(task=task, rows=[{"id": 0, "context": "c", "target": "positive"},
                                              {"id": 1, "context": "c", "target": "negative"}],
                             labels=None, sha256="x")}
    a = {("ad", "fpb"): {"answers": ["Positive!", "negative"]}}
    b = {("ad", "fpb"): {"answers": ["positive, I think", "positive"]}}
    agree, total, diffs = agreement(a, b, datas, ("ours", "theirs"))
    assert (agree, total) == (1, 2)
    assert diffs == [{"pair": "ad×fpb", "row": 1, "ours": "negative", "theirs": "positive"}]
