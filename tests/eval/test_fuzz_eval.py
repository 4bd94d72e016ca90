"""Fuzz: hostile task registries, data files and flags through the eval entry point (`lora.cli.shims.eval_main`, as `python -m eval`).

    .venv/bin/python -m pytest -q -m fuzz tests/eval/test_fuzz_eval.py
    FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -m fuzz tests/eval/test_fuzz_eval.py

No model is loaded: every example is `--dry-run`, `--list-tasks` or `score`. Task registries hold hostile
names (`../../x`, NUL, over-long), wrong types, deep nesting, invalid UTF-8; flags take arbitrary text; --out
points at odd places. Promises checked (docs/robustness.md): exit 0 or 2 (these modes never finish with
error rows, so 1 is not allowed here); on 2 exactly one `error:` line; these modes write nothing anywhere
(--out included) whatever the exit code.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora.cli.shims import eval_main as main
from tests.conftest import BUNDLED
from tests.fuzz_support import EXAMPLES, check_refusal, report_figures, tree

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: Counter[str] = Counter()

FRAGMENTS = ["\n", "\r", "\x85", "\u2028", "\u2029", "\x00", "\x1b", ": ", "#", "{", "---", "../", "../../x", "/",
             "/etc/passwd", "~", "~nosuchuser/x", "é", "😀", " ", "a", "0", "_", ".", "..", "-", "x" * 300,
             "\ud800", "fpb", "t", "positive"]
hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(FRAGMENTS),
                         st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6).map("".join))
TASK_NAMES = ["t", "fpb", "a.b", "A-1", "../../x", "/abs", "a/b", ".", "..", "", "_comment", "-x", "x" * 101, "a..b",
              "a\x00b", "\ud800", "t "]
task_name = st.one_of(st.just("t"), st.sampled_from(TASK_NAMES), hostile_text)
VALUES = ["Infinity", "NaN", "1e999", "-1", "0", "1", "16", "9" * 5000, "true", "null", "[]", "{}", '""', '" "',
          '"\\ud800"', "[" * 3000 + "]" * 3000, '"classification"', '"numeric"', '"text"', '"accuracy"',
          '"f1_macro"', '["positive", "negative"]', '["", " "]', '[1, 2]', '"chatml"', '"nope"', '"d.jsonl"',
          '"missing.jsonl"', '"../../etc/passwd"', '"/"', '"."', '"d.jsonl\\u0000"']
json_value = st.one_of(st.sampled_from(VALUES), st.integers(-(2**70), 2**70).map(str),
                       hostile_text.map(json.dumps))
ENTRY_KEYS = ["data", "kind", "labels", "max_new_tokens", "prompt_format", "headline", "description", "dta", "Kind"]


def task_entry_text(mutations: list[tuple[str, str]]) -> str:
    fields = {"data": '"d.jsonl"', "kind": '"classification"', "labels": '["negative", "positive"]'}
    for key, value in mutations:
        if value == "del":
            fields.pop(key, None)
        else:
            fields[key] = value
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


entry_text = st.one_of(
    st.just(task_entry_text([])),
    st.lists(st.tuples(st.sampled_from(ENTRY_KEYS), st.one_of(json_value, st.just("del"))), max_size=3)
    .map(task_entry_text),
    st.sampled_from(VALUES),
)


def registry_bytes(tasks: list[tuple[str, str]], raw: bytes | None) -> bytes:
    if raw is not None:
        return raw
    body = ", ".join(f"{json.dumps(n)}: {e}" for n, e in tasks)
    return ("{" + body + "}").encode("utf-8")


RAW_REGISTRIES = [b"", b"\xff\xfe{}", b'{"t": {"data": "d.jsonl", "kind": "text"}}\x00', b"[]", b"null", b"{}",
                  b'{"_c": 1}', b'{"t": 1, "t": 2}', b'{"t": ' * 2000 + b"1" + b"}" * 2000, b'{"\xc3\x28": {}}']
registries = st.one_of(st.just(registry_bytes([("t", task_entry_text([]))], None)), st.builds(registry_bytes, st.lists(st.tuples(task_name, entry_text), min_size=1, max_size=3),
                       st.one_of(st.none(), st.none(), st.sampled_from(RAW_REGISTRIES))))

GOOD_ROWS = b'{"context": "Profit rose.", "target": "positive"}\n{"context": "Loss.", "target": "negative"}\n'
ROWS = [GOOD_ROWS, b"", b"\n\n", b"not json\n", b'{"context": 1, "target": "positive"}\n', b'{"context": "x"}\n',
        b'{"context": "x", "target": "\\ud800"}\n', b'{"context": "x", "target": "maybe"}\n', b"\xff\n", b"[]\n",
        b'{"context": "x", "target": "positive"}\x00\n', b"[" * 5000 + b"\n", GOOD_ROWS + b'{"target": 1e999}\n']
data_bytes = st.one_of(st.just(GOOD_ROWS), st.sampled_from(ROWS))

OUTS = ["out", "deep/er/out", "../escape", "/dev/null", "/proc/x", "", ".", "configs.json", "d.jsonl/x", "a\x00b",
        "x" * 300, "~nosuchuser/o", "\ud800", "with space"]
LIMITS = ["1", "2", "0", "-1", "9" * 5000, "1.5", "", "x", "nan", "1e3", "٣", "--dry-run"]
flag = st.one_of(
    st.tuples(st.just("--tasks"), st.one_of(st.sampled_from(["t", "t,t", ",", "t,nope", "fpb", "../../x", ""]),
                                            hostile_text)),
    st.tuples(st.sampled_from(["--limit", "--batch-size"]), st.one_of(st.sampled_from(LIMITS),
                                                                     st.integers(-(2**40), 2**40).map(str))),
    st.tuples(st.just("--out"), st.one_of(st.sampled_from(OUTS), hostile_text)),
    st.tuples(st.just("--prompt-format"), st.sampled_from(["chatml", "finlora_inst", "nope", ""])),
    st.tuples(st.just("--base-quant"), st.sampled_from(["4", "8", "16", "3", "x"])),
    st.tuples(st.sampled_from(["--no-base", "--force", "--no-progress"])),
)


def call(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)  # relative --out / --predictions land in the example's folder, never in the repository
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's own exit: allowed for --help only
                rc = exc.code if isinstance(exc.code, int) else 1
                assert rc == 0 and "usage:" in out.getvalue(), (rc, argv, err.getvalue())
    finally:
        os.chdir(old)
    return rc, out.getvalue(), err.getvalue()


def check(rc: int, err: str, argv: list[str], before: set[str], after: set[str]) -> None:
    assert rc in (0, 2), (rc, argv, err)
    if rc == 2:
        check_refusal(err, argv)
    assert after == before, (argv, after ^ before)


def workspace(tmp: str, registry: bytes, data: bytes) -> Path:
    root = Path(tmp)
    (root / "tasks.json").write_bytes(registry)
    (root / "d.jsonl").write_bytes(data)
    return root


# ---------------------------------------------------------------- defects the fuzz found, pinned


@pytest.mark.parametrize("argv", [
    ["score", "--task", "-:", "--predictions", "p.jsonl"],  # was: usage block + error, SystemExit(2)
    ["score"],
    ["--limit", "x", "--dry-run"],
    ["--base-quant", "3", "--list-tasks"],
    ["--no-such-flag"],
])
def test_eval_flag_errors_are_one_line(tmp_path, argv):
    rc, _, err = call(argv, tmp_path)
    check(rc, err, argv, set(), tree(tmp_path))
    assert rc == 2 and "--help" in err


@pytest.mark.fuzz
@FUZZ
@given(registry=registries, data=data_bytes, flags=st.lists(flag, max_size=3), list_tasks=st.booleans())
def test_fuzz_eval_dry_run_and_list(registry, data, flags, list_tasks):
    TRIED["eval --dry-run / --list-tasks"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = workspace(tmp, registry, data)
        argv = ["--tasks-json", str(root / "tasks.json"), "--base-model", str(BUNDLED),
                "--list-tasks" if list_tasks else "--dry-run", *(x for f in flags for x in f)]
        before = tree(root)
        rc, _, err = call(argv, root)
        check(rc, err, argv, before, tree(root))
        TRIED["eval --dry-run / --list-tasks, accepted"] += rc == 0


@pytest.mark.fuzz
@FUZZ
@given(registry=registries, data=data_bytes, predictions=data_bytes,
       task=st.one_of(st.just("t"), st.sampled_from(["fpb", "../../x", ""]), hostile_text), own_registry=st.booleans())
def test_fuzz_eval_score(registry, data, predictions, task, own_registry):
    TRIED["eval score"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = workspace(tmp, registry, data)
        (root / "p.jsonl").write_bytes(predictions.replace(b'"context"', b'"output"'))
        argv = ["score", "--task", task, "--predictions", "p.jsonl",
                *(["--tasks-json", str(root / "tasks.json")] if own_registry else [])]
        before = tree(root)
        rc, out, err = call(argv, root)
        check(rc, err, argv, before, tree(root))
        if rc == 0:
            TRIED["eval score, accepted"] += 1
            assert isinstance(json.loads(out)["headline"], str)


@pytest.mark.fuzz
def test_fuzz_eval_figures():
    """Both properties ran and tried inputs (run them with the module); FUZZ_REPORT=FILE appends the counts."""
    report_figures(__name__, TRIED)