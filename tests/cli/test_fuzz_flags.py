"""Fuzz: finetune.py's flags with arbitrary text, integers and floats, through `lora.cli.shims.finetune_main` (what `python finetune.py` runs).

    .venv/bin/python -m pytest -q -m fuzz tests/cli/test_fuzz_flags.py
    FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -m fuzz tests/cli/test_fuzz_flags.py

Each example is a cpu or GPU entry, a mode (--dry-run, --plan, --plan --json, or a launch with the child and
the GPU count faked) and a handful of flags with hostile values. Promises checked (docs/robustness.md): exit
0 or 2; on 2 exactly one `error:` line and nothing written; --plan writes nothing even on 0; a launch writes
only recipes/<name>.yaml and adapters/<name>/; --plan --json prints one JSON object.
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

import lora.cli.shims
from lora.core.process import ChildResult
from lora.train import launch as launch_plan
from tests.conftest import BUNDLED, cpu_entry, fake_machine
from tests.fuzz_support import EXAMPLES, check_refusal, tree

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TRIED: Counter[str] = Counter()

ENTRIES = {
    "c": cpu_entry(),
    "g": cpu_entry(profile="a5000x4", base_model=str(BUNDLED), max_steps=None, sequence_len=512),
}
NUMERIC_FLAGS = ["--gpus", "--cpu-processes", "--num-machines", "--machine-rank", "--main-process-port",
                 "--usd-per-gpu-hour", "--zero"]
OTHER_FLAGS = ["--plan", "--json", "--fresh", "--dry-run", "--list"]
TEXTS = ["0", "1", "2", "3", "4", "-1", "-0", "+1", " 2", "2 ", "1_0", "0x10", "1e3", "1.5", "nan", "NaN", "inf",
         "-inf", "1e999", "9" * 5000, "-" + "9" * 400, "٣", "²", "", " ", "--", "-h", "--help", "\x00", "\n",
         "1\n", "\u2028", "\ud800", "65535", "65536", "4096", "1024", "1025", "0.0", "0.26", "1e-320", "10.0.0.1",
         "--gpus", "--plan=1", "true"]
value = st.one_of(
    st.sampled_from(TEXTS),
    st.integers(-(2**66), 2**66).map(str),
    st.floats().map(repr),
    st.text(max_size=12),
)
flag_pair = st.one_of(
    st.tuples(st.sampled_from(NUMERIC_FLAGS), value).map(list),
    st.tuples(st.just("--main-process-ip"), st.one_of(st.sampled_from(["10.0.0.1", "::1", "", "x\ny"]),
                                                      st.text(max_size=8))).map(list),
    st.tuples(st.sampled_from(OTHER_FLAGS)).map(list),
    st.tuples(st.sampled_from(NUMERIC_FLAGS), value).map(lambda t: [f"{t[0]}={t[1]}"]),
)
MODES = {"dry-run": ["--dry-run"], "plan": ["--plan"], "plan-json": ["--plan", "--json"], "launch": []}


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = lora.cli.shims.finetune_main(argv)
        except SystemExit as exc:  # only --help may leave through argparse
            assert exc.code == 0 and "usage:" in out.getvalue(), (exc.code, err.getvalue())
            return -1, out.getvalue(), err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def finished_child(output_dir: Path):
    def run_child(argv, env, cwd, on_start=None):
        ckpt = output_dir / "checkpoint-2"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_model.safetensors").write_bytes(b"w")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 2}))
        (output_dir / "adapter_model.safetensors").write_bytes(b"w")
        return ChildResult(0, None)

    return run_child


# ---------------------------------------------------------------- defects the fuzz found, pinned


def test_refused_launch_leaves_no_adapters_folder(workspace, fake_child, capsys):
    """The run lock is taken first; a launch refused after it (no CUDA here) used to leave adapters/ behind."""
    fake_child.gpus = 0
    workspace.write({"g": ENTRIES["g"]})
    assert lora.cli.shims.finetune_main(workspace.argv("g")) == 2
    assert "no CUDA" in capsys.readouterr().err
    assert not workspace.adapters.exists() and not workspace.recipes.exists()


def test_run_lock_removes_only_the_empty_folders_it_made(tmp_path):
    from lora.train.lock import RunLock

    with RunLock(tmp_path / "a" / "b", "x"):
        assert (tmp_path / "a" / "b" / ".x.lock").is_file()
    assert list(tmp_path.iterdir()) == []
    with RunLock(tmp_path / "a" / "b", "x"):
        (tmp_path / "a" / "b" / "x").mkdir()  # the launch wrote its outputs
    assert (tmp_path / "a" / "b" / "x").is_dir() and not (tmp_path / "a" / "b" / ".x.lock").exists()


@pytest.mark.fuzz
@FUZZ
@given(name=st.sampled_from(sorted(ENTRIES)), mode=st.sampled_from(sorted(MODES)),
       flags=st.lists(flag_pair, max_size=4), gpus_found=st.integers(0, 8))
def test_fuzz_flags(monkeypatch, name, mode, flags, gpus_found):
    TRIED["flags"] += 1
    monkeypatch.setattr("lora.cli.verbs.train.validate_with_axolotl", lambda *a: None)  # the registry fuzz runs it for real
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = root / "configs.json"
        registry.write_text(json.dumps(ENTRIES))
        monkeypatch.setattr(launch_plan, "run_child", finished_child(root / "adapters" / name))
        monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(gpus_found))
        argv = [name, *MODES[mode], *(x for pair in flags for x in pair), "--config-json", str(registry),
                "--recipes-dir", str(root / "recipes"), "--adapters-dir", str(root / "adapters")]
        before = tree(root)
        rc, out, err = call(argv)
        after = tree(root)
        if rc == -1:
            TRIED["flags, --help"] += 1
            assert after == before
            return
        assert rc in (0, 2), (rc, argv, err)
        if rc == 2:
            check_refusal(err, argv)
            assert after == before, after - before
            return
        TRIED["flags, accepted"] += 1
        new = after - before
        if "--list" in argv:  # --list wins over every other mode
            assert new == set() and " entries in " in out, new
        elif "--plan" in argv:
            assert new == set(), new
            if "--json" in argv:
                assert isinstance(json.loads(out), dict)
        else:
            assert "recipes/" in new and f"recipes/{name}.yaml" in new, new
            assert all(p in ("recipes/", f"recipes/{name}.yaml", "adapters/") or p.startswith(f"adapters/{name}/")
                       for p in new), new


@pytest.mark.fuzz
def test_fuzz_flags_figures():
    """The property ran and tried inputs (run it with the module); FUZZ_REPORT=FILE appends the counts."""
    if not TRIED["flags"]:
        pytest.skip("run with the fuzz tests of this module")
    assert TRIED["flags"] >= min(EXAMPLES, 10) and TRIED["flags, accepted"] > 0, TRIED
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"module": __name__, "examples": EXAMPLES, "tried": dict(TRIED)}) + "\n")
