"""Which tasks an adapter is evaluated on when --tasks is not given: FinLoRA's adapter -> tasks map.

    python -m eval lora_adapters/ --dry-run      # prints this map and each adapter's family and tasks

The map is data (the three dicts below), taken from FinLoRA's test/run_all_adapters.sh (`adapter_prefix`)
and lora/finetune_configs.json (training file names). An adapter's family is decided, in order, from
  1. run.json's training entry: the file name of its `dataset_path` (TRAIN_FILE_FAMILY), then
  2. its row name / folder name: `<family>` or `<family>_...` (FinLoRA publishes
     `<family>_llama_3_1_8b_<variant>`; the CPU demo is `sentiment_smollm2_cpu`), longest family first.
No family: the adapter is evaluated on every task whose data file is present (and the plan says so).
Everything here is pure: which data files exist is passed in (`present`), so it is tested without files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

# FinLoRA test/run_all_adapters.sh: adapter family -> the tasks it is evaluated on.
FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "sentiment": ("fpb", "fiqa", "tfns", "nwgi"),
    "headline": ("headline",),
    "ner": ("ner",),
    "finer": ("xbrl_finer", "xbrl_fnxl"),
    "xbrl_extract": ("xbrl_tags_extract", "xbrl_value_extract", "xbrl_formula_extract", "xbrl_formula_calc_extract"),
    "xbrl_term": ("xbrl_term",),
    "formula": ("formula",),
    "financebench": ("financebench",),
}

# Training file name (run.json entry.dataset_path, any folder) -> family. FinLoRA's names and ours.
TRAIN_FILE_FAMILY: dict[str, str] = {
    "finlora_sentiment_train.jsonl": "sentiment",
    "fpb_train.jsonl": "sentiment",  # the CPU demo (sentiment_smollm2_cpu) trains on FPB alone
    "finlora_headline_train.jsonl": "headline",
    "headline_train.jsonl": "headline",
    "finlora_ner_train.jsonl": "ner",
    "ner_train.jsonl": "ner",
    "finer_train_batched.jsonl": "finer",
    "xbrl_extract_train.jsonl": "xbrl_extract",
    "xbrl_extract_train_batched.jsonl": "xbrl_extract",
    "xbrl_term_train.jsonl": "xbrl_term",
    "formula_train.jsonl": "formula",
    "financebench_train.jsonl": "financebench",
}


@dataclass(frozen=True)
class Family:
    name: str | None  # None: unknown -> every present task
    source: str  # how it was decided, for --dry-run and results.json

    def describe(self) -> str:
        return f"family {self.name}, from {self.source}" if self.name else f"family unknown: {self.source}"


def _file_name(path: str) -> str:
    return PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name


def _name_family(name: str) -> str | None:
    for fam in sorted(FAMILY_TASKS, key=len, reverse=True):  # xbrl_extract before a hypothetical xbrl
        if name == fam or name.startswith(fam + "_"):
            return fam
    return None


def family_of(run: dict | None, names: list[str]) -> Family:
    """The adapter's family from run.json (its training entry's dataset_path), else its names (row name,
    folder name; only the last path component of each counts)."""
    entry = (run or {}).get("entry")
    dataset = entry.get("dataset_path") if isinstance(entry, dict) else None
    file = _file_name(dataset.strip()) if isinstance(dataset, str) and dataset.strip() else None
    if file in TRAIN_FILE_FAMILY:
        return Family(TRAIN_FILE_FAMILY[file], f"run.json dataset_path {file}")
    lasts = [_file_name(n) for n in names if n]
    for last in lasts:
        fam = _name_family(last)
        if fam:
            return Family(fam, f"name {last}")
    shown = ", ".join(dict.fromkeys(lasts)) or "?"
    what = f"run.json dataset_path {file}" if file else "no run.json dataset_path"
    return Family(None, f"{what}; name {shown} matches no family")


@dataclass
class Selection:
    """Which tasks each adapter (by row name) is evaluated on, and what was skipped."""
    per_adapter: dict[str, tuple[str, ...]] = field(default_factory=dict)
    needed: tuple[str, ...] = ()  # every task some row is evaluated on, in registry order (the data to load)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why (one stderr note each)


def select(adapters: list[tuple[str, Family, bool]], registry_order: list[str], missing_files: dict[str, str],
           base_alone: bool) -> Selection:
    """Default task selection (no --tasks). adapters: (row name, family, evaluable); registry_order: the
    registry's task names; missing_files: task -> its data file, for registry tasks whose file is absent.
    base_alone: a base row with no adapters (it gets every present task). A mapped task that is not in the
    registry, or whose data file is absent, is skipped with a note; so is an absent file among "every
    present task" (an unknown family, the base alone). The base row of a group takes the union of its
    adapters' tasks (eval/runner.py)."""
    sel = Selection()
    present = [t for t in registry_order if t not in missing_files]
    wanted: set[str] = set()

    def every_present(who: str) -> tuple[str, ...]:
        for t, f in missing_files.items():
            sel.skipped.setdefault(t, f"task {t} ({who}): data file {f} is not present")
        return tuple(present)

    for name, fam, ok in adapters:
        if fam.name is None:
            tasks = every_present("unknown family: every present task") if ok else ()
        else:
            tasks = ()
            for t in FAMILY_TASKS[fam.name]:
                if t in missing_files:
                    sel.skipped.setdefault(t, f"task {t} (family {fam.name}): data file {missing_files[t]} is not present")
                elif t not in registry_order:
                    sel.skipped.setdefault(t, f"task {t} (family {fam.name}) is not in the task registry")
                else:
                    tasks += (t,)
        sel.per_adapter[name] = tasks
        if ok:
            wanted.update(tasks)
    if base_alone:
        wanted.update(every_present("base model alone: every present task"))
    sel.needed = tuple(t for t in registry_order if t in wanted)
    return sel
