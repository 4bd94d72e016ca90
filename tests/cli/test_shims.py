"""lora/cli/shims.py: FinLoRA's `python finetune.py …` and `python -m eval …` become the same `finlora` verbs.

    .venv/bin/python -m pytest -q tests/cli/test_shims.py
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from lora.cli.shims import eval_main, eval_verb, finetune_main, finetune_verb
from tests.conftest import REPO


@pytest.mark.parametrize("argv, verb", [
    (["x"], ["train", "x"]),
    (["x", "--dry-run"], ["train", "x", "--dry-run"]),
    (["--list"], ["list"]),
    (["--list", "--config-json", "c.json"], ["list", "--config-json", "c.json"]),
    (["x", "--plan", "--json"], ["plan", "x", "--json"]),
    (["x", "--check", "--profile", "auto"], ["check", "x", "--profile", "auto"]),
    (["x", "--sky", "--bucket", "b", "--dry-run"], ["sky", "x", "--bucket", "b", "--dry-run"]),
    (["--queue", "a", "b", "--eval", "end"], ["queue", "a", "b", "--eval", "end"]),
    (["--queue=a"], ["queue", "a"]),
    (["--match", "s*", "--dry-run"], ["queue", "--match", "s*", "--dry-run"]),
    (["x", "--sweep", "lora_r=4,8", "--yes"], ["sweep", "x", "lora_r=4,8", "--yes"]),
    (["--queue", "a", "--on-finish", "echo", "--plan"], ["queue", "a", "--on-finish", "echo", "--plan"]),
    # a second mode flag is not dropped: the verb refuses it
    (["x", "--sky", "--plan"], ["sky", "x", "--plan"]),
    (["--run_name", "x"], ["train", "--run_name", "x"]),
])
def test_finetune_flags_pick_the_verb(argv, verb):
    assert finetune_verb(argv) == verb


@pytest.mark.parametrize("argv, verb", [
    (["lora_adapters/", "--tasks", "fpb"], ["eval", "lora_adapters/", "--tasks", "fpb"]),
    (["--list-tasks"], ["eval", "--list-tasks"]),
    (["score", "--task", "fpb"], ["score", "--task", "fpb"]),
    (["report", "out"], ["report", "out"]),
])
def test_python_m_eval_picks_the_verb(argv, verb):
    assert eval_verb(argv) == verb


def test_finetune_list_is_finlora_list(capsys):
    assert finetune_main(["--list"]) == 0
    shim = capsys.readouterr().out
    from lora.cli import main

    assert main(["list"]) == 0 and capsys.readouterr().out == shim and " entries in " in shim


def test_a_second_mode_flag_is_refused_not_ignored(capsys):
    assert finetune_main(["sentiment_smollm2_cpu", "--sky", "--plan"]) == 2
    assert "finlora sky does not take --plan" in capsys.readouterr().err


def test_finetune_help_shows_the_mapping_and_the_verbs(capsys):
    assert finetune_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "= finlora train" in out and "verbs:" in out


def test_eval_list_tasks_as_before(capsys):
    assert eval_main(["--list-tasks"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("20 tasks, ") and "fpb " in out


@pytest.mark.parametrize("argv", [["finetune.py", "sentiment_smollm2_cpu", "--plan"], ["-m", "eval", "--list-tasks"]])
def test_the_entry_points_run_as_scripts(argv):
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
