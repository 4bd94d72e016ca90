"""Re-create every file under data/ from the provenance copies in ../shared/data.

    python data/preprocess.py                      # reads ../shared/data, writes data/
    python data/preprocess.py --shared /path/to/shared/data --check   # verify only, write nothing

What it does (see data/README.md for sources and licences):
- copies FinLoRA's test sets (fpb, tfns, ner, formula, xbrl_term, financebench) and train sets
  (formula, xbrl_term, financebench), its published adapter cards, PEFT configs and results table byte for byte;
- checks by sha256 the FinLoRA files the shared folder does not hold (fiqa and nwgi test sets, FinLoRA's
  registry files and generators), copied from FinLoRA's repository at commit 7e1cf82;
- builds data/train/fpb_train.jsonl: every sentence of the full Financial PhraseBank
  (fpb/all-data.csv) that is not in FinLoRA's fpb_test.jsonl, in FinLoRA's {"context","target"}
  format with the same instruction as the test set. Sentences are compared after lower-casing and
  dropping everything but ASCII letters and digits, because the test file carries mojibake
  ("year+ó ??") where the CSV has the original latin-1 characters.
Files are written atomically (temp file + rename); --check compares instead of writing.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lora.fsutil import write_atomic  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_SHARED = DATA_DIR.parent.parent / "shared" / "data"

COPIES = {
    "test/fpb_test.jsonl": "finlora/test/fpb_test.jsonl",
    "test/tfns_test.jsonl": "finlora/test/tfns_test.jsonl",
    "test/ner_test.jsonl": "finlora/test/ner_test.jsonl",
    "test/formula_test.jsonl": "finlora/test/formula_test.jsonl",
    "test/xbrl_term_test.jsonl": "finlora/test/xbrl_term_test.jsonl",
    "test/financebench_test.jsonl": "finlora/test/financebench_test.jsonl",
    "train/formula_train.jsonl": "finlora/train/formula_train.jsonl",
    "train/xbrl_term_train.jsonl": "finlora/train/xbrl_term_train.jsonl",
    "train/financebench_train.jsonl": "finlora/train/financebench_train.jsonl",
    "licenses/FinLoRA-LICENSE": "finlora/LICENSE",
    "finlora/published_results.csv": "finlora/published_results.csv",
}
# The Axolotl card and PEFT config of each published FinLoRA adapter (lora/finlora_cards.py reads them).
# Two PEFT configs in the shared folder belong to no catalogue run (a 70B adapter, an unnamed xbrl run).
CARD_DIRS = ("finlora/adapter_cards", "finlora/adapter_configs")
NOT_COPIED = ("misc_headline_llama_3_1_70b_4bits_r4.json",
              "8bits_r8_xbrl_train.jsonl-meta-llama-Llama-3.1-8B-Instruct-8bits-r8.json")
# Files from FinLoRA's repository (commit 7e1cf82) that the shared folder does not hold: checked by hash only.
REPOSITORY_ONLY = {  # path under data/ -> sha256 of FinLoRA's file at 7e1cf82 (git show 7e1cf82:<FinLoRA path>)
    "test/fiqa_test.jsonl": "b93474e5bf55eecd367fc342da9b4501758dcb4a45d64454e24955dc9b2cc56f",
    "test/nwgi_test.jsonl": "b350a0eb3f908a2576013307653fe4b2bcca00c2d16af85c02c9191b46ec2508",
    "finlora/finetune_configs.json": "619046a15927637f915c6e001f3c38e50bce7468dd039a7656eec360920aa444",
    "finlora/finetune_configs_multi.json": "0b143a212554b7baafd7ed4263006cd5ef1069d87d31c0068d3277c80e45b399",
    "finlora/finetune_configs_plain.json": "359f0b53e8081e5dca8a10bc963fa3c345e9d20a0a117dbf340dbbbbd494316e",
    "finlora/finetune.py": "ac2c02adacda32eb7ed5bfa99c78564b0ec7c4574ce401315b78054fe919d1c2",
    "finlora/test_dataset.py": "24815ad458dd421f5f737bc0fab638fac35a4a20e32b2fa9d8feadbdd31e9153",
    "finlora/finetune_lora_plain.py": "cd10763636298dd8481b4e337c0470628271492c9aecdb00998af6cb678e6ddc",
}

FPB_INSTRUCTION = (
    "Instruction: What is the sentiment of this news? "
    "Please choose an answer from {negative/neutral/positive}.\nInput: "
)
FPB_LABELS = ("negative", "neutral", "positive")
_TEST_SENTENCE = re.compile(r"\nInput: (.*)\nAnswer: $", re.S)


def sentence_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def fpb_train_rows(all_data_csv: Path, fpb_test: Path) -> list[dict]:
    held_out = set()
    for line in fpb_test.read_text(encoding="utf-8").splitlines():
        match = _TEST_SENTENCE.search(json.loads(line)["context"])
        if match is None:
            raise ValueError(f"{fpb_test}: a context without 'Input: …\\nAnswer: '")
        held_out.add(sentence_key(match.group(1)))
    rows = []
    with all_data_csv.open(encoding="latin-1", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != ["label", "news"]:
            raise ValueError(f"{all_data_csv}: expected header label,news, got {header}")
        for label, sentence in reader:
            if label not in FPB_LABELS:
                raise ValueError(f"{all_data_csv}: unknown label {label!r}")
            if sentence_key(sentence) in held_out:
                continue
            rows.append({"context": FPB_INSTRUCTION + sentence.strip() + "\nAnswer: ", "target": label})
    return rows


def jsonl_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    for row in rows:
        buf.write(json.dumps(row, ensure_ascii=False) + "\n")
    return buf.getvalue().encode("utf-8")


def planned_files(shared: Path) -> dict[str, bytes]:
    files = {dst: (shared / src).read_bytes() for dst, src in COPIES.items()}
    for folder in CARD_DIRS:
        for src in sorted((shared / folder).iterdir()):
            if src.name not in NOT_COPIED:
                files[f"{folder}/{src.name}"] = src.read_bytes()
    rows = fpb_train_rows(shared / "fpb" / "all-data.csv", shared / "finlora/test/fpb_test.jsonl")
    files["train/fpb_train.jsonl"] = jsonl_bytes(rows)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder")
    parser.add_argument("--check", action="store_true", help="compare with data/ instead of writing")
    args = parser.parse_args(argv)
    if not (args.shared / "fpb" / "all-data.csv").is_file():
        print(f"error: {args.shared} does not hold fpb/all-data.csv; pass --shared", file=sys.stderr)
        return 2
    stale = []
    for rel, payload in sorted(planned_files(args.shared).items()):
        target = DATA_DIR / rel
        digest = hashlib.sha256(payload).hexdigest()[:12]
        if args.check:
            if not target.is_file() or target.read_bytes() != payload:
                stale.append(rel)
            continue
        write_atomic(target, payload)
        rows = payload.count(b"\n")
        print(f"wrote data/{rel} ({rows} lines, sha256 {digest}…)")
    for rel, digest in REPOSITORY_ONLY.items():
        target = DATA_DIR / rel
        if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != digest:
            stale.append(f"{rel} (not FinLoRA's file: copy it again from FinLoRA at 7e1cf82)")
    if stale:
        print("stale: " + ", ".join(stale) + " (run python data/preprocess.py)", file=sys.stderr)
        return 1
    if args.check:
        print("data/ matches the shared sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
