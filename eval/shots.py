"""k-shot base rows (`--shots K`): FinLoRA's few-shot prompt, with examples chosen reproducibly.

    python -m eval lora_adapters/ --shots 3            # "base 3-shot" next to the (zero-shot) adapters

Rules (FinLoRA test/test_few_shot.py, made deterministic):
- Examples come from the task's `train` file (eval/tasks.json) when it names one that exists; else from
  the task's test rows: K of them, chosen once per task (seeded), are held out of scoring for EVERY row
  of that task (base and adapters alike), so all rows score the same rows; so are test rows whose
  context repeats a held-out one (they would see their own answer).
- Each scored test row gets its own K examples: `random.Random(h).sample(...)` with h derived from
  (seed, task, row id) by SHA-256. FinLoRA samples per row too, but unseeded; per-row seeding keeps that
  variety and makes a row's examples independent of --limit, batch order and the other tasks.
- An example whose context equals the test row's (after strip) is never chosen for it (FinLoRA drops an
  example whose "question" equals the row's; its heuristic compares the first 100 characters when there
  is no "Question:", which for FPB/TFNS matches every example — see docs/eval.md).
- Prompt context: "Example {i}:\\nInput: {ctx}\\nAnswer: {target}\\n\\n" per example, then
  "Input: {test ctx}\\nAnswer:" — verbatim FinLoRA; the row's prompt template then wraps it.
Everything here is pure except `read_train` (the edge that reads the train file).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import cached_property

from eval.tasks import Task, TaskData
from lora.core.errors import UserError
from lora.core.files import repo_relative, sha256_file
from lora.core.jsonl import read_jsonl

DEFAULT_SEED = 0


@dataclass(frozen=True)
class Pool:
    """Where a task's examples come from: its train file, or (train is None) its test rows."""
    source: str  # "train" | "test"
    path: str
    sha256: str
    rows: tuple[dict, ...]  # {"id": line index (0-based), "context", "target"}


@dataclass(frozen=True)
class TaskShots:
    """One task's k-shot plan: the examples of every scored test row."""
    task: str
    k: int
    seed: int
    pool: Pool
    held_out: tuple[int, ...]  # test row ids used as examples (source "test"); no row scores them
    duplicates: tuple[int, ...] = ()  # test rows whose context repeats a held-out one: not scored either
    per_row: dict[int, tuple[int, ...]] = field(default_factory=dict)  # test row id -> example ids

    def context(self, row: dict) -> str:
        """The row's context with its examples in front (FinLoRA's format)."""
        return few_shot_context(row["context"], [self._by_id[i] for i in self.per_row[row["id"]]])

    @cached_property
    def _by_id(self) -> dict[int, dict]:
        return {r["id"]: r for r in self.pool.rows}

    def fingerprint(self) -> dict:
        """What the base pair's prompts depend on beyond the template: K, seed, pool, chosen example ids."""
        chosen = json.dumps(sorted((k, list(v)) for k, v in self.per_row.items()), separators=(",", ":"))
        return {"k": self.k, "seed": self.seed, "source": self.pool.source, "pool_sha256": self.pool.sha256,
                "examples_sha256": hashlib.sha256(chosen.encode()).hexdigest()}

    def facts(self) -> dict:
        """What results.json records about the task's examples."""
        return {"k": self.k, "seed": self.seed, "source": self.pool.source, "path": self.pool.path,
                "pool_size": len(self.pool.rows), "held_out_ids": list(self.held_out),
                "duplicate_ids": list(self.duplicates)}


def few_shot_context(context: str, examples: list[dict]) -> str:
    head = "".join(f"Example {i}:\nInput: {e['context']}\nAnswer: {e['target']}\n\n" for i, e in enumerate(examples, 1))
    return f"{head}Input: {context}\nAnswer:"


def _rng(seed: int, task: str, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{task}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def read_train(task: Task) -> Pool | None:
    """The task's train file as an example pool; None when the registry names none or it is absent (then
    the test rows are used). A train file that exists but is malformed is bad input (exit 2, file:line)."""
    if task.train is None or not task.train.is_file():
        return None
    relabel = dict(task.relabel)  # a relabelled task's examples show the labels it scores
    rows = tuple({"id": n - 1, "context": o["context"],
                  "target": relabel.get(task.kind.normalize_target(o["target"]), o["target"])}
                 for n, o in read_jsonl(task.train, ("context", "target"), f"task {task.name}: train file"))
    return Pool("train", repo_relative(task.train), sha256_file(task.train), rows)


def plan_task(data: TaskData, train: Pool | None, k: int, seed: int, limit: int | None) -> tuple[TaskShots, TaskData]:
    """The k-shot plan for one task and the rows every row of it is scored on (held-out rows removed,
    then the first `limit`). data: the whole test file (not yet limited)."""
    name = data.task.name
    if train is not None:
        pool, held_out, keep = train, (), set()
        if k > len(pool.rows):
            raise UserError(f"--shots {k}: task {name} has only {len(pool.rows)} examples in its train file {pool.path}")
    else:
        n = len(data.rows)
        if k > n - 1:
            raise UserError(f"--shots {k}: task {name} has no train file and {n} test row(s); k-shot takes "
                            f"{k} of them as examples and needs at least one left to score")
        held_out = tuple(sorted(_rng(seed, name, "held-out").sample([r["id"] for r in data.rows], k)))
        keep = set(held_out)
        pool = Pool("test", repo_relative(data.task.data), data.sha256, tuple(r for r in data.rows if r["id"] in keep))
    # a test row whose context is a held-out example's would see its own answer: not scored by any row
    example_contexts = {e["context"].strip() for e in pool.rows} if train is None else set()
    duplicates = tuple(r["id"] for r in data.rows if r["id"] not in keep and r["context"].strip() in example_contexts)
    unscored = keep | set(duplicates)
    scored_rows = [r for r in data.rows if r["id"] not in unscored]
    scored = TaskData(task=data.task, rows=scored_rows, labels=data.labels, sha256=data.sha256).head(limit)
    if not scored.rows:
        raise UserError(f"--shots {k}: task {name} has no test row left to score (its {len(held_out)} held-out "
                        f"examples and {len(duplicates)} rows repeating them are all it has)")
    by_context: dict[str, list[int]] = {}
    for i, e in enumerate(pool.rows):
        by_context.setdefault(e["context"].strip(), []).append(i)
    per_row = {}
    for r in scored.rows:
        same = set(by_context.get(r["context"].strip(), ()))
        candidates = [i for i in range(len(pool.rows)) if i not in same] if same else range(len(pool.rows))
        if len(candidates) < k:
            raise UserError(f"--shots {k}: task {name} test row {r['id']} has only {len(candidates)} usable "
                            f"examples (the others repeat its context)")
        per_row[r["id"]] = tuple(pool.rows[i]["id"] for i in _rng(seed, name, str(r["id"])).sample(candidates, k))
    plan = TaskShots(task=name, k=k, seed=seed, pool=pool, held_out=held_out, duplicates=duplicates, per_row=per_row)
    return plan, scored
