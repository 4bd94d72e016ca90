"""Re-create every file under data/ from the provenance copies in ../shared/data.

    python data/preprocess.py                      # reads ../shared/data, writes data/
    python data/preprocess.py --shared /path/to/shared/data --check   # verify only, write nothing

What it does (see data/README.md for sources and licences):
- copies FinLoRA's test sets (fpb, tfns, ner, formula, xbrl_term, financebench) and train sets
  (formula, xbrl_term, financebench) byte for byte;
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
    if stale:
        print("stale: " + ", ".join(stale) + " (run python data/preprocess.py)", file=sys.stderr)
        return 1
    if args.check:
        print("data/ matches the shared sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
