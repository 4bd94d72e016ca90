"""eval/adapter_tasks.py: FinLoRA's adapter -> tasks map, the family-detection order and the default
selection (pure: which data files exist is passed in).

    .venv/bin/python -m pytest tests/eval/test_adapter_tasks.py -q
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from eval.adapter_tasks import FAMILY_TASKS, TRAIN_FILE_FAMILY, Family, family_of, select

REPO = Path(__file__).resolve().parents[2]
FINLORA_MIRROR = Path("/work/.mirror/Open-Finance-Lab+FinLoRA/repo")


def test_map_is_finloras():
    assert FAMILY_TASKS == {
        "sentiment": ("fpb", "fiqa", "tfns", "nwgi"),
        "headline": ("headline",),
        "ner": ("ner",),
        "finer": ("xbrl_finer", "xbrl_fnxl"),
        "xbrl_extract": ("xbrl_tags_extract", "xbrl_value_extract", "xbrl_formula_extract",
                         "xbrl_formula_calc_extract"),
        "xbrl_term": ("xbrl_term",),
        "formula": ("formula",),
        "financebench": ("financebench",),
    }
    assert set(TRAIN_FILE_FAMILY.values()) == set(FAMILY_TASKS)


@pytest.mark.skipif(not FINLORA_MIRROR.is_dir(), reason="FinLoRA mirror not present")
def test_map_matches_finloras_run_all_adapters_script():
    script = subprocess.run(["git", "-C", str(FINLORA_MIRROR), "show", "HEAD:test/run_all_adapters.sh"],
                            capture_output=True, text=True, check=True).stdout
    found: dict[str, set[str]] = {}
    for tasks, family in re.findall(r"^\s*([\w|]+)\) echo (\w+) ;;", script, re.M):
        found.setdefault(family, set()).update(tasks.split("|"))
    assert found == {fam: set(tasks) for fam, tasks in FAMILY_TASKS.items()}


@pytest.mark.parametrize("dataset,family", [
    ("data/train/finlora_sentiment_train.jsonl", "sentiment"),
    ("../data/train/fpb_train.jsonl", "sentiment"),
    ("data/train/finer_train_batched.jsonl", "finer"),
    ("/abs/data/train/xbrl_extract_train.jsonl", "xbrl_extract"),
    ("data\\train\\formula_train.jsonl", "formula"),
])
def test_family_from_run_json_dataset_path(dataset, family):
    fam = family_of({"entry": {"dataset_path": dataset}}, ["whatever_name"])
    assert fam == Family(family, f"run.json dataset_path {Path(dataset.replace(chr(92), '/')).name}")


def test_dataset_path_comes_before_the_name_and_an_unknown_one_falls_back_to_it():
    assert family_of({"entry": {"dataset_path": "data/train/fpb_train.jsonl"}}, ["ner_x"]).name == "sentiment"
    fam = family_of({"entry": {"dataset_path": "data/train/my_own.jsonl"}}, ["ner_llama_3_1_8b_8bits_r8"])
    assert fam == Family("ner", "name ner_llama_3_1_8b_8bits_r8")


@pytest.mark.parametrize("names,family", [
    (["sentiment_smollm2_cpu"], "sentiment"),
    (["8bits_r8/finer_llama_3_1_8b_8bits_r8"], "finer"),  # the folder path under the argument: its last part
    (["xbrl_extract_llama_3_1_8b_4bits_r4"], "xbrl_extract"),
    (["xbrl_term_llama_3_1_8b_fp16_r8"], "xbrl_term"),
    (["financebench"], "financebench"),
    (["my run", "formula_llama_3_1_8b_8bits_r8_dora"], "formula"),  # run.json name first, then the folder
    (["formulaic_adapter"], None),  # a family is a whole first word, not a prefix of one
    (["llama_sentiment"], None),
])
def test_family_from_names(names, family):
    assert family_of(None, names).name == family


def test_unknown_family_says_why():
    fam = family_of({"entry": {"dataset_path": "x/custom.jsonl"}}, ["mystery", "mystery"])
    assert fam == Family(None, "run.json dataset_path custom.jsonl; name mystery matches no family")
    assert family_of(None, ["tiny_a"]).describe() == "family unknown: no run.json dataset_path; name tiny_a matches no family"


def test_every_shipped_registry_entry_gets_the_family_its_name_says():
    # finetune_configs.json: the training file and the name must agree, or a default run evaluates the wrong tasks
    entries = {n: e for n, e in json.loads((REPO / "finetune_configs.json").read_text()).items() if not n.startswith("_")}
    assert entries
    for name, entry in entries.items():
        by_data = family_of({"entry": entry}, [])
        assert by_data.source.startswith("run.json"), name
        assert by_data.name == family_of(None, [name]).name, name


ORDER = ["fpb", "tfns", "ner", "formula", "xbrl_term", "financebench", "fiqa"]


def test_select_maps_each_adapter_and_skips_absent_tasks_with_one_note_each():
    sent, term, unknown = Family("sentiment", "s"), Family("xbrl_term", "s"), Family(None, "why")
    sel = select([("s1", sent, True), ("s2", sent, True), ("t", term, True)], ORDER,
                 {"fiqa": "/d/fiqa_test.jsonl"}, base_alone=False)
    assert sel.per_adapter == {"s1": ("fpb", "tfns"), "s2": ("fpb", "tfns"), "t": ("xbrl_term",)}
    assert sel.needed == ("fpb", "tfns", "xbrl_term")  # registry order
    assert sel.skipped == {"fiqa": "task fiqa (family sentiment): data file /d/fiqa_test.jsonl is not present",
                           "nwgi": "task nwgi (family sentiment) is not in the task registry"}
    # an unknown family: every task whose data is present
    sel = select([("u", unknown, True)], ORDER, {"fiqa": "/d/fiqa_test.jsonl"}, base_alone=False)
    assert sel.per_adapter["u"] == tuple(ORDER[:-1]) == sel.needed
    assert list(sel.skipped) == ["fiqa"]


def test_select_error_adapters_need_nothing_and_the_base_alone_gets_every_present_task():
    sel = select([("bad", Family("formula", "s"), False)], ORDER, {}, base_alone=False)
    assert sel.per_adapter == {"bad": ("formula",)} and sel.needed == ()
    sel = select([], ORDER, {"ner": "/d/ner_test.jsonl"}, base_alone=True)
    assert sel.needed == ("fpb", "tfns", "formula", "xbrl_term", "financebench", "fiqa")
    assert "ner" in sel.skipped and "/d/ner_test.jsonl" in sel.skipped["ner"]
