"""Fuzz: hostile registry entries through the real training entry point (`lora.cli.shims.finetune_main`, as `python finetune.py`).

    .venv/bin/python -m pytest -q -m fuzz tests/recipe/test_fuzz_registry.py              # default budget
    FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -m fuzz tests/test_fuzz_*.py    # the long run
    FUZZ_REPORT=/tmp/fuzz.jsonl ...                                                 # record inputs tried

A valid cpu entry (tests/conftest.py) is mutated: wrong types, huge/negative/non-finite numbers written as
JSON text, unknown keys and typos, text with every line-break kind, control characters, NUL, lone surrogate
escapes, YAML-significant text, path-like run names. Each registry goes through `--dry-run` (axolotl's
validator included) and the train path (the training child faked, faults injected: exit codes, signals,
partial checkpoints). Promises checked (docs/robustness.md): exit 0 or 2 (train: the child's code); on 2 one
`error:` line and nothing written; on 0 the recipe is recipes/<name>.yaml and holds only template keys;
nothing is created outside recipes/ and adapters/.
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lora.cli.shims
from lora.core.process import ChildResult
from lora.recipe.registry import Entry
from lora.recipe.render import template_keys
from lora.train import launch as launch_plan
from tests.conftest import REPO, cpu_entry, fake_machine
from tests.fuzz_support import EXAMPLES, check_refusal, report_figures, tree

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
TRIED: Counter[str] = Counter()
KEYS = template_keys()
DATASET_KEYS = {"path", "ds_type", "data_files", "split", "type"}

# ---------------------------------------------------------------- strategies

BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
FRAGMENTS = BREAKS + [
    "\x00", "\x1b[31m", "\x7f", "\t", "\ufeff", "\ufffe", ": ", "#", "{", "}", "[", "]", "---", "...", "&a", "*a",
    "!!python/object/apply:os.system ['id']", "%YAML 1.1", "|", ">", "'", '"', "\\", "smuggled: 1",
    "lora_r: 999", "\nsmuggled: 1", "\rsmuggled: 1", "\x85smuggled: 1", "\u2028smuggled: 1", "\u2029smuggled: 1",
    "? k", "- item", "~", "../", "/etc/passwd", "~root", "~nosuchuser/x", "é", "😀", " ", "a", "0", "n" * 300,
]
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(FRAGMENTS),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8).map("".join),
)
# JSON text, not Python values: Infinity, 1e999, 5000-digit integers and lone surrogates only exist as text.
LITERALS = ["Infinity", "-Infinity", "NaN", "1e999", "-1e999", "1e-999", "4.9e-324", "0", "-0", "-1", "0.5", "1",
            "2", "3", "4", "8", "16", "32", "1.0", "0.01", "2.5", "true", "false", "null", "[]", "{}", '""', '" "',
            "9" * 5000, "-" + "9" * 5000, "1" + "0" * 400 + ".5", "[" * 3000 + "]" * 3000, '"\\ud800"',
            '"a\\udfffb"', '["\\udc00"]', '[{"path": "\\ud834"}]', '"\\u0000"', '"all-linear"', '["q_proj"]',
            '["q_proj", "nope"]', '["a b"]', '"cpu"', '"a5000x4"', '"chatml"', '[{"path": "x", "weight": 0.333}]',
            '[{"path": "x", "weight": 2}]', '[{"path": "x", "extra": 1}]', '"cosine"', '"linear"']
json_value = st.one_of(
    st.sampled_from(LITERALS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    hostile_text.map(json.dumps),
    st.lists(hostile_text, max_size=3).map(json.dumps),
)
REAL_KEYS = sorted(Entry.model_fields)


def typo(key: str, i: int, kind: int) -> str:
    i %= len(key)
    return [key[:i] + key[i + 1:], key[:i] + key[i] * 2 + key[i:], key.upper(), key.replace("_", "-"),
            key + " ", key[:i] + "\u0430" + key[i + 1:]][kind % 6] or "x"


key_name = st.one_of(
    st.sampled_from(REAL_KEYS),
    st.builds(typo, st.sampled_from(REAL_KEYS), st.integers(0, 40), st.integers(0, 5)),
    hostile_text,
)
TEXT_KEYS = ["description", "dataset_path", "base_model"]  # any text is a valid value: injection targets
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(TEXT_KEYS), hostile_text.map(json.dumps)),
    st.tuples(st.just("set"), st.sampled_from(TEXT_KEYS), hostile_text.map(lambda t: json.dumps("./" + t))),
    st.tuples(st.just("set"), key_name, json_value),
    st.tuples(st.just("del"), st.sampled_from(REAL_KEYS), st.just("")),
)
RUN_NAMES = ["r", "run.v2", "A-1_b", "../x", "/abs", "a/b", ".", "..", "", "-x", "x" * 121, "x" * 120, "a..b",
             "a\nb", "a\x00b", "\ud800", "~", "r ", "ré", "con", ".hidden", "a\\b", "*", "$(id)"]
run_name = st.one_of(st.just("r"), st.sampled_from(RUN_NAMES), hostile_text)


def registry_text(name: str, mutations: list[tuple[str, str, str]], extra_entries: int) -> str:
    """The registry as JSON text, the mutated values spliced in raw."""
    fields = {k: json.dumps(v) for k, v in cpu_entry(description="fuzz").items()}
    for op, key, value in mutations:
        if op == "del":
            fields.pop(key, None)
        else:
            fields[key] = value
    body = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"
    others = [f'"other{i}": {json.dumps(cpu_entry())}' for i in range(extra_entries)]
    return "{" + ", ".join([f"{json.dumps(name)}: {body}", *others]) + "}"


registries = st.tuples(run_name, st.lists(mutation, max_size=4), st.integers(0, 1)).map(
    lambda t: (t[0], registry_text(*t)))

# ---------------------------------------------------------------- the checks


def repo_outputs() -> set[str]:
    """What the repository's own output folders hold: a run with --recipes-dir/--adapters-dir never adds there."""
    return {p.as_posix() for d in ("recipes", "lora_adapters") for p in (REPO / d).rglob("*")}


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = lora.cli.shims.finetune_main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_recipe(recipe: Path) -> None:
    """Top-level keys only the template's; each dataset item only the template's keys too."""
    parsed = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict) and set(parsed) <= KEYS, set(parsed) - KEYS
    for ds in parsed["datasets"]:
        assert set(ds) == DATASET_KEYS, ds


class Workspace:
    def __init__(self, root: Path, text: str):
        self.root = root
        self.registry = root / "configs.json"
        self.registry.write_text(text, encoding="utf-8", errors="surrogatepass")
        self.recipes, self.adapters = root / "recipes", root / "adapters"

    def argv(self, name: str, *flags: str) -> list[str]:
        return [name, *flags, "--config-json", str(self.registry), "--recipes-dir", str(self.recipes),
                "--adapters-dir", str(self.adapters)]


def outside(before: set[str], after: set[str]) -> set[str]:
    return {p for p in after - before if not p.startswith(("recipes/", "adapters/"))}


# ---------------------------------------------------------------- defects the fuzz found, pinned


@pytest.mark.parametrize("field,value,needle", [
    ("base_model", "foo\nbar", "hub id"),  # was: HFValidationError traceback from the offline-cache probe
    ("base_model", "\u0df0", "hub id"),
    ("base_model", "a/b/c", "hub id"),
    ("dataset_path", "data/a\x00b.jsonl", "embedded null byte"),  # was: ValueError traceback in resolve()
    ("dataset_path", "x" * 300 + ".jsonl", "File name too long"),  # was: OSError traceback in exists()
    ("base_model", "./" + "m" * 300, "File name too long"),
])
def test_unusable_model_refs_and_paths_are_one_line(workspace, capsys, field, value, needle):
    workspace.write({"r": cpu_entry(**{field: value})})
    assert lora.cli.shims.finetune_main(workspace.argv("r", "--dry-run")) == 2
    check_refusal(capsys.readouterr().err)
    assert workspace.written() == []


def test_hub_ids_and_local_folders_still_accepted(workspace, capsys, monkeypatch):
    monkeypatch.setattr("lora.cli.verbs.train.validate_with_axolotl", lambda *a: None)
    workspace.write({"r": cpu_entry(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", dataset_path="../x/y.jsonl")})
    assert lora.cli.shims.finetune_main(workspace.argv("r", "--dry-run")) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- --dry-run


@pytest.mark.fuzz
@FUZZ
@given(case=registries)
def test_fuzz_registry_dry_run(case):
    name, text = case
    TRIED["registry --dry-run"] += 1
    repo_before = repo_outputs()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp), text)
        before = tree(ws.root)
        rc, out, err = call(ws.argv(name, "--dry-run"))
        after = tree(ws.root)
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            check_refusal(err)
            assert after == before, after - before
        else:
            TRIED["registry --dry-run, accepted"] += 1
            assert after - before == {"recipes/", f"recipes/{name}.yaml"}, after - before
            check_recipe(ws.recipes / f"{name}.yaml")
            assert "validated by axolotl" in out
    assert repo_outputs() == repo_before


# ---------------------------------------------------------------- the train path, with faults

FAULTS = {  # what the faked training child does: (exit code, signal, writes)
    "complete": (0, None, "final"),
    "exit0-no-weights": (0, None, ""),
    "sigint-saved": (0, 2, "partial"),
    "crash": (1, None, "partial"),
    "oom-kill": (137, None, "cut"),
    "sigterm": (-15, 15, "cut"),
    "exit3": (3, None, ""),
}


def fake_child(fault: str, output_dir: Path):
    code, signal, writes = FAULTS[fault]

    def run_child(argv, env, cwd, on_start=None):
        assert env.get("FINLORA_RUN_LOCK"), "the child must carry the lock token"
        ckpt = output_dir / "checkpoint-2"
        if writes in ("final", "partial", "cut"):
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / "adapter_model.safetensors").write_bytes(b"w")
        if writes in ("final", "partial"):
            step = 2 if writes == "final" else 1
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 2}))
        if writes in ("final", "partial"):
            (output_dir / "adapter_model.safetensors").write_bytes(b"w")
        return ChildResult(code, signal)

    return run_child


def expected_code(fault: str) -> int:
    code, signal, _ = FAULTS[fault]
    if signal is not None:
        return code or 128 + signal
    return 0 if fault == "complete" else code or 1


@pytest.mark.fuzz
@FUZZ
@given(case=registries, fault=st.sampled_from(sorted(FAULTS)), fresh=st.booleans())
def test_fuzz_registry_train_with_faults(monkeypatch, case, fault, fresh):
    name, text = case
    TRIED["registry train + faults"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp), text)
        calls = []
        child = fake_child(fault, ws.adapters / name)
        monkeypatch.setattr(launch_plan, "run_child", lambda *a, **k: calls.append(a) or child(*a, **k))
        monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(0))
        before = tree(ws.root)
        rc, _, err = call(ws.argv(name, *(["--fresh"] if fresh else [])))
        after = tree(ws.root)
        assert not outside(before, after), outside(before, after)
        if not calls:  # refused before launch
            assert rc == 2, (rc, err)
            check_refusal(err)
            assert after == before, after - before
            return
        TRIED["registry train + faults, launched"] += 1
        assert rc == expected_code(fault), (fault, rc, err)
        record = json.loads((ws.adapters / name / "run.json").read_text())
        assert record["status"] == ("complete" if rc == 0 else "interrupted" if FAULTS[fault][1] else "failed")
        assert not (ws.adapters / f".{name}.lock").exists(), "a finished launch leaves no lock"
        check_recipe(ws.recipes / f"{name}.yaml")
        assert {p for p in after - before if p.startswith("recipes/")} <= {"recipes/", f"recipes/{name}.yaml"}


# ---------------------------------------------------------------- figures


@pytest.mark.fuzz
def test_fuzz_registry_figures():
    """Every property above ran and tried inputs (run it with the module); FUZZ_REPORT=FILE appends the counts."""
    report_figures(__name__, TRIED)