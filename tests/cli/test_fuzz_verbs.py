"""Fuzz: every `finlora` verb with hostile positionals and any verb's flags, through `lora.cli.main`.

    .venv/bin/python -m pytest -q -m fuzz tests/cli/test_fuzz_verbs.py
    FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -m fuzz tests/cli/test_fuzz_verbs.py

Each example is a verb, a few positionals and a few flags drawn from the options of all verbs (so most are
flags the verb does not take), with hostile values. Launches are kept out: train, sky, queue and sweep always
get --dry-run, the demo an empty adapters folder, eval a folder of no adapters. Promises checked
(docs/robustness.md): exit 0, 1 or 2; on 2 exactly one `error:` line and nothing written anywhere in the
example's folder; the repository's recipes/ untouched.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora.cli import VERBS, main
from lora.core.errors import OneLineParser
from lora.train import launch as launch_plan
from tests.conftest import REPO, cpu_entry, fake_machine
from tests.fuzz_support import EXAMPLES, check_refusal, report_figures, tree

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TRIED: Counter[str] = Counter()


def option_strings() -> list[str]:
    """Every long option any verb takes, read from the verbs' own parsers."""
    found = set()
    for verb in VERBS:
        p = OneLineParser(prog=verb)
        importlib.import_module(f"lora.cli.verbs.{verb}").register(p)
        found |= {s for s in p._option_string_actions if s.startswith("--") and s != "--help"}
    return sorted(found)


OPTIONS = option_strings()
TEXTS = ["0", "1", "-1", "2", "nan", "inf", "1e999", "", " ", "--", "-h", "\x00", "\n", "\ud800", "..", "../x",
         "/etc", "a" * 300, "c", "lora_r=4,8", "x=1", "fpb", "finlora", "auto", "bf16", "9" * 400, "a5000x4"]
text = st.one_of(st.sampled_from(TEXTS), st.text(max_size=10))
flag = st.one_of(st.tuples(st.sampled_from(OPTIONS)).map(list),
                 st.tuples(st.sampled_from(OPTIONS), text).map(list),
                 st.tuples(st.sampled_from(OPTIONS), text).map(lambda t: [f"{t[0]}={t[1]}"]))
# What keeps an example from launching anything, per verb
SAFE = {"train": ["--dry-run"], "sky": ["--dry-run"], "queue": ["--dry-run"], "sweep": ["--dry-run"]}


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # only --help may leave through argparse
            assert exc.code == 0 and "usage:" in out.getvalue(), (exc.code, argv, err.getvalue())
            return -1, out.getvalue(), err.getvalue()
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.fuzz
@FUZZ
@given(verb=st.sampled_from(sorted(VERBS)), positionals=st.lists(st.one_of(st.just("c"), text), max_size=3),
       flags=st.lists(flag, max_size=3))
def test_fuzz_verbs(monkeypatch, verb, positionals, flags):
    TRIED["verbs"] += 1
    monkeypatch.setattr("lora.cli.verbs.train.validate_with_axolotl", lambda *a: None)
    monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(0))
    recipes_before = tree(REPO / "recipes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "configs.json").write_text(json.dumps({"c": cpu_entry()}))
        (root / "empty").mkdir()
        where = {"list": "registry", "show": "registry", "render": "registry", "plan": "registry",
                 "check": "registry", "train": "registry", "sky": "registry", "queue": "registry",
                 "sweep": "registry"}
        argv = [verb, *positionals, *(x for pair in flags for x in pair)]
        if where.get(verb) == "registry":
            argv += ["--config-json", str(root / "configs.json"), "--recipes-dir", str(root / "recipes"),
                     "--adapters-dir", str(root / "adapters")]
        if verb == "demo":
            argv += ["--adapters", str(root / "empty"), "--port", "0"]
        if verb == "eval":
            argv = ["eval", str(root / "empty"), *argv[1:], "--out", str(root / "out"), "--dry-run"]
        if verb in ("infer", "merge"):
            argv = [verb, str(root / "no-such-adapter"), *argv[1:]]
        if "--on-finish" in argv:  # everything after it is a command; keep the safety flags before it
            argv = argv[:argv.index("--on-finish")]
        argv += SAFE.get(verb, [])
        before = tree(root)
        rc, out, err = call(argv)
        after = tree(root)
    assert tree(REPO / "recipes") == recipes_before
    if rc == -1:
        TRIED["verbs, --help"] += 1
        return
    assert rc in (0, 1, 2), (rc, argv, err)
    if rc == 2:
        check_refusal(err, argv)
        assert after == before, (argv, after - before)
        TRIED[f"verbs, refused {verb}"] += 1
        return
    TRIED["verbs, accepted"] += 1


@pytest.mark.fuzz
def test_fuzz_verbs_figures():
    """The property ran and tried inputs (run it with the module); FUZZ_REPORT=FILE appends the counts."""
    report_figures(__name__, TRIED)
    assert TRIED["verbs, accepted"] > 0, TRIED
