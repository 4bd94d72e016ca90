"""FinLoRA's published table, as data: its task, model and metric names mapped to ours, and its CSV read.

    python -m eval report /tmp/o --layout finlora     # FinLoRA's numbers beside ours in /tmp/o/finlora_table.md

The numbers are data/finlora/published_results.csv (FinLoRA's README.md, commit 7e1cf82); METRIC_STYLE is the
scale FinLoRA prints each metric on. The rules are in docs/eval.md, "Results in FinLoRA's layout".
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, require_file

# ---------------------------------------------------------------- FinLoRA's published table, as data

PUBLISHED_CSV = REPO_ROOT / "data" / "finlora" / "published_results.csv"
PUBLISHED_SOURCE = "FinLoRA README.md, commit 7e1cf82 (data/finlora/published_results.csv)"
PUBLISHED_BASE_MODEL = "Llama-3.1-8B-Instruct"  # every published Llama row is this base or an adapter on it

# FinLoRA's table task name -> our task name. "Overall Average" is left out: it averages all 19 tasks.
PUBLISHED_TASKS = {
    "FPB": "fpb", "FiQA SA": "fiqa", "TFNS": "tfns", "NWGI": "nwgi", "Headline": "headline", "NER": "ner",
    "FiNER": "xbrl_finer", "FNXL": "xbrl_fnxl", "Tag Extraction": "xbrl_tags_extract",
    "Value Extraction": "xbrl_value_extract", "Formula Construction": "xbrl_formula_extract",
    "Formula Calculation": "xbrl_formula_calc_extract", "XBRL Term": "xbrl_term", "FinanceBench": "financebench",
    "Financial Math": "formula", "CFA Level 1": "cfa_level1", "CFA Level 2": "cfa_level2",
    "CFA Level 3": "cfa_level3", "CPA REG": "cpa_reg",
}
# Tasks whose published second number is BERTScore F1 (ProsusAI/finbert, the bert-score package) and whose
# accuracy is blank; for every other task it is sklearn's weighted F1 (under FinLoRA's scoring rule).
PUBLISHED_BERTSCORE_TASKS = frozenset({"xbrl_term", "financebench"})
PUBLISHED_BERTSCORE_ENCODER = "ProsusAI/finbert"
# FinLoRA's model name -> our method. Its other models (70B, GPT-4o, DeepSeek V3, Gemini) have no
# counterpart among our rows and are not shown. FinLoRA publishes no fp16_r8 numbers.
PUBLISHED_MODELS = {
    "llama_3_1_8b_instruct_base": "base",
    "llama_3_1_8b_instruct_lora_8bits_r8": "8bits_r8",
    "llama_3_1_8b_instruct_qlora_4bits_r4": "4bits_r4",
    "llama_3_1_8b_instruct_dora_8bits_r8": "8bits_r8_dora",
    "llama_3_1_8b_instruct_rslora_8bits_r8": "8bits_r8_rslora",
}
METHODS = ("8bits_r8", "4bits_r4", "8bits_r8_dora", "8bits_r8_rslora", "fp16_r8")  # FinLoRA's adapter columns
PUBLISHED_HEADER = ["task", "model", "accuracy_pct", "f1_or_score"]

# Our metric -> (label, factor to the printed scale, decimals). Accuracy is printed in % as FinLoRA prints
# it (ours are 0-1 in results.json); F1-like scores stay 0-1, as FinLoRA prints them.
METRIC_STYLE = {
    "accuracy": ("accuracy %", 100.0, 2),
    "f1_weighted": ("weighted F1", 1.0, 3),
    "bertscore_f1": ("BERTScore F1", 1.0, 3),
    "rougeL": ("ROUGE-L", 1.0, 3),
}
COMPARED = ("accuracy", "f1_weighted", "bertscore_f1")  # the metrics FinLoRA publishes, in its column order


def metric_style(metric: str) -> tuple[str, float, int]:
    return METRIC_STYLE.get(metric, (metric, 1.0, 3))


# ---------------------------------------------------------------- published rows


def parse_published(text: str, source: str) -> dict[tuple[str, str], dict[str, float]]:
    """(our task, method) -> {metric: value on FinLoRA's printed scale}; rows for models or tasks we do not
    map are skipped. A malformed file is one UserError naming the line."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != PUBLISHED_HEADER:
        raise UserError(f"{source}: header must be {','.join(PUBLISHED_HEADER)}, got {header!r}")
    out: dict[tuple[str, str], dict[str, float]] = {}
    for lineno, fields in enumerate(reader, start=2):
        if len(fields) != 4:
            raise UserError(f"{source}:{lineno}: expected 4 fields, got {len(fields)}")
        name, model, acc, score = fields
        task, method = PUBLISHED_TASKS.get(name), PUBLISHED_MODELS.get(model)
        if task is None or method is None:
            continue
        second = "bertscore_f1" if task in PUBLISHED_BERTSCORE_TASKS else "f1_weighted"
        values = {}
        for metric, raw in (("accuracy", acc), (second, score)):
            if raw.strip():
                try:
                    values[metric] = float(raw)
                except ValueError:
                    raise UserError(f"{source}:{lineno}: {raw!r} is not a number") from None
        out[(task, method)] = values
    return out


def read_published(path: Path = PUBLISHED_CSV) -> dict[tuple[str, str], dict[str, float]]:
    require_file(path, "published results")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    return parse_published(text, str(path))
