"""Task registry (eval/tasks.json, or --tasks-json FILE) and test-data loading with line-exact errors.

    python -m eval --list-tasks
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.errors import InputError
from lora.fsutil import sha256_file

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "tasks.json"
KINDS = ("classification", "numeric", "text")
DEFAULT_HEADLINE = {"classification": "accuracy", "numeric": "accuracy", "text": "rougeL"}
METRICS_BY_KIND = {
    "classification": ("accuracy", "f1_weighted", "f1_macro"),
    "numeric": ("accuracy",),
    "text": ("rouge1", "rouge2", "rougeL"),
}
DEFAULT_MAX_NEW_TOKENS = {"classification": 8, "numeric": 16, "text": 128}


@dataclass(frozen=True)
class Task:
    name: str
    data: Path
    kind: str
    max_new_tokens: int
    headline: str
    labels: tuple[str, ...] | None = None  # None: derived from the data when loaded
    prompt_format: str | None = None
    description: str = ""
    spec: dict = field(default_factory=dict, compare=False, hash=False)  # the registry entry as written


def parse_registry(raw: dict, base_dir: Path, source: str) -> dict[str, Task]:
    """Validate a registry's JSON object; every problem names the file and the task."""
    tasks: dict[str, Task] = {}
    for name, entry in raw.items():
        if name.startswith("_"):
            continue  # "_comment" and friends
        where = f"{source}: task {name!r}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: entry must be an object")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise InputError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(entry.get("data"), str):
            raise InputError(f"{where}: 'data' (path to a JSONL file) is required")
        labels = entry.get("labels")
        if labels is not None:
            if kind != "classification":
                raise InputError(f"{where}: labels only apply to classification tasks")
            if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)):
                raise InputError(f"{where}: labels must be a non-empty list of strings")
            labels = tuple(x.strip().lower() for x in labels)
        max_new = entry.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS[kind])
        if not isinstance(max_new, int) or max_new < 1:
            raise InputError(f"{where}: max_new_tokens must be a positive integer")
        headline = entry.get("headline", DEFAULT_HEADLINE[kind])
        if headline not in METRICS_BY_KIND[kind]:
            raise InputError(f"{where}: headline must be one of {', '.join(METRICS_BY_KIND[kind])}")
        fmt = entry.get("prompt_format")
        if fmt is not None:
            from lora.prompts import PROMPT_FORMATS

            if fmt not in PROMPT_FORMATS:
                raise InputError(f"{where}: unknown prompt_format {fmt!r} (known: {', '.join(PROMPT_FORMATS)})")
        data = Path(entry["data"])
        tasks[name] = Task(
            name=name, data=data if data.is_absolute() else (base_dir / data).resolve(), kind=kind,
            max_new_tokens=max_new, headline=headline, labels=labels, prompt_format=fmt,
            description=str(entry.get("description", "")), spec=dict(entry),
        )
    if not tasks:
        raise InputError(f"{source}: no tasks defined")
    return tasks


def load_registry(path: Path | str | None = None) -> dict[str, Task]:
    path = Path(path) if path else DEFAULT_REGISTRY
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"task registry {path} not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: task registry is not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: task registry must be a JSON object of task name -> entry")
    return parse_registry(raw, path.resolve().parent, str(path))


def select_tasks(registry: dict[str, Task], names: list[str] | None) -> list[Task]:
    if not names:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise InputError(f"unknown task {', '.join(unknown)} (known tasks: {', '.join(registry)})")
    return [registry[n] for n in dict.fromkeys(names)]


@dataclass(frozen=True)
class TaskData:
    task: Task
    rows: list[dict]  # {"id": line index (0-based), "context": str, "target": str}
    labels: tuple[str, ...] | None
    sha256: str


def read_jsonl_rows(path: Path, keys: tuple[str, ...]):
    """Yield (line number, object) for each non-blank line; InputError names file and line otherwise."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not (isinstance(obj, dict) and all(isinstance(obj.get(k), str) for k in keys)):
                shape = ", ".join(f'"{k}": str' for k in keys)
                raise InputError(f"{path}:{lineno}: expected {{{shape}}}")
            yield lineno, obj


def load_task_data(task: Task) -> TaskData:
    """Read and validate every line (so a malformed line stops the run before any model loads)."""
    if not task.data.is_file():
        raise InputError(f"task {task.name}: data file {task.data} not found")
    rows: list[dict] = []
    for lineno, obj in read_jsonl_rows(task.data, ("context", "target")):
        target = obj["target"].strip()
        if task.kind == "classification":
            target = target.lower()
            if task.labels is not None and target not in task.labels:
                raise InputError(
                    f"{task.data}:{lineno}: target {obj['target']!r} is not one of the labels {', '.join(task.labels)}"
                )
        elif task.kind == "numeric":
            from eval.metrics import parse_target_number

            if parse_target_number(target) is None:
                raise InputError(f"{task.data}:{lineno}: numeric target {obj['target']!r} is not a number")
        rows.append({"id": lineno - 1, "context": obj["context"], "target": target})
    if not rows:
        raise InputError(f"task {task.name}: data file {task.data} has no rows")
    labels = task.labels
    if task.kind == "classification" and labels is None:
        labels = tuple(sorted({r["target"] for r in rows}))
    return TaskData(task=task, rows=rows, labels=labels, sha256=sha256_file(task.data))
