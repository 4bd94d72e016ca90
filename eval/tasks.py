"""Task registry (eval/tasks.json, or --tasks-json FILE) and test-data loading with line-exact errors.

    python -m eval --list-tasks
    python -m eval --list-tasks --tasks-json my_tasks.json

A registry is a JSON object of task name -> entry (keys of TaskEntry below); top-level keys starting with
"_" are comments. Task names become file names under --out, so they are restricted to safe identifiers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from eval.kinds import ENCODER_HEADLINE, FINLORA_KINDS, KINDS, Kind
from lora.core.errors import UserError, did_you_mean
from lora.core.files import read_json, repo_relative, require_file, sha256_file, unique_keys, user_path, user_path_in
from lora.core.jsonl import read_jsonl
from lora.core.prompts import PROMPT_FORMATS

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "tasks.json"
# pairs/<task>.json and predictions/<row>/<task>.jsonl: a name like "../../x" would write outside --out.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TASK_NAME_MAX = 100


class FinloraRule(BaseModel):
    """How FinLoRA's harness scores the task (test/test_dataset.py): used by --scoring finlora."""

    model_config = ConfigDict(extra="forbid")

    scorer: StrictStr = Field(description="one of the finlora_* kinds (eval/kinds.py)")
    max_new_tokens: StrictInt = Field(ge=1, description="FinLoRA's answer budget (its max_new_token_dict, else 30)")


class TaskEntry(BaseModel):
    """One registry entry as written."""

    model_config = ConfigDict(extra="forbid")

    data: StrictStr = Field(description="JSONL test file, relative to the registry's folder")
    train: StrictStr | None = Field(default=None, description=(
        "JSONL training file of the same task (k-shot examples come from it), relative to the registry's folder"))
    kind: StrictStr
    labels: list[StrictStr] | None = Field(default=None, min_length=1)
    max_new_tokens: StrictInt | None = Field(default=None, ge=1)
    prompt_format: StrictStr | None = None
    headline: StrictStr | None = None
    finlora: FinloraRule | None = Field(default=None, description="FinLoRA's scoring rule (--scoring finlora)")
    relabel: dict[StrictStr, StrictStr] | None = Field(default=None, min_length=1, description=(
        "target as written -> target scored, applied to the test and train rows as they are read: scores a file "
        "whose labels are known to be wrong by its source's meaning, without copying the file"))
    description: StrictStr = ""


@dataclass(frozen=True)
class Finlora:
    kind: Kind
    max_new_tokens: int


@dataclass(frozen=True)
class Task:
    name: str
    data: Path
    kind: Kind
    max_new_tokens: int
    headline: str
    labels: tuple[str, ...] | None = None  # None: derived from the data when loaded
    train: Path | None = None  # the task's training file, when the registry names one (k-shot examples)
    prompt_format: str | None = None
    description: str = ""
    finlora: Finlora | None = None  # FinLoRA's rule for this task; None: --scoring finlora refuses the task
    relabel: tuple[tuple[str, str], ...] = ()  # (as written, as scored) target pairs; () = targets as written
    spec: dict = field(default_factory=dict, compare=False, hash=False)  # the registry entry as written



def _entry_error(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(entry)"
    if err["type"] == "extra_forbidden":
        fields = FinloraRule.model_fields if len(err["loc"]) > 1 and err["loc"][0] == "finlora" else TaskEntry.model_fields
        return f"unknown key {key!r}{did_you_mean(str(err['loc'][-1]), fields)}"
    if err["type"] == "missing":
        return f"missing required key {key!r}"
    return f"key {key!r}: {err['msg']}"


def check_task_name(name: str, source: str) -> None:
    shown = name if len(name) <= 60 else name[:59] + "…"
    if len(name) > TASK_NAME_MAX or not TASK_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{source}: task name {shown!r} is not a safe identifier (letters, digits, _ . -; "
                        f"starts with a letter or digit; no '..'; at most {TASK_NAME_MAX} characters)")


def _relabel(entry: TaskEntry, kind: Kind, labels: tuple[str, ...] | None, where: str) -> tuple[tuple[str, str], ...]:
    if entry.relabel is None:
        return ()
    if not kind.has_labels:
        raise UserError(f"{where}: key 'relabel': relabelling only applies to a kind with labels, not {kind.name}")
    if entry.finlora is not None:
        raise UserError(f"{where}: key 'relabel': FinLoRA scores the file as written; drop 'finlora' from a "
                        f"relabelled task (keep FinLoRA's rule on the task that reads the file as is)")
    relabel = tuple((kind.normalize_target(a), kind.normalize_target(b)) for a, b in entry.relabel.items())
    outside = sorted({b for _, b in relabel} - set(labels)) if labels else []
    if outside:
        raise UserError(f"{where}: key 'relabel': {outside[0]!r} is not one of the task's labels ({', '.join(labels)})")
    return relabel


def parse_entry(name: str, raw: object, base_dir: Path, source: str) -> Task:
    """One entry -> Task; every problem is one line naming the file, the task and the key."""
    where = f"{source}: task {name!r}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: entry must be an object, got {type(raw).__name__}")
    try:
        entry = TaskEntry.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key first: it explains the "missing" error that comes with it
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise UserError(f"{where}: {_entry_error(first)}") from None
    kind = KINDS.get(entry.kind)
    if kind is None:
        raise UserError(f"{where}: key 'kind': must be one of {', '.join(KINDS)}, got {entry.kind!r}"
                        f"{did_you_mean(entry.kind, KINDS)}")
    labels = None
    if entry.labels is not None:
        if not kind.has_labels:
            raise UserError(f"{where}: key 'labels': labels only apply to a kind with labels, not {kind.name}")
        if not all(x.strip() for x in entry.labels):
            raise UserError(f"{where}: key 'labels': labels must be non-blank strings")
        labels = tuple(kind.normalize_target(x) for x in entry.labels)
    headline = entry.headline or kind.headline
    finlora = None
    if entry.finlora is not None:
        if entry.finlora.scorer not in FINLORA_KINDS:
            raise UserError(f"{where}: key 'finlora.scorer': must be one of {', '.join(FINLORA_KINDS)}, "
                            f"got {entry.finlora.scorer!r}{did_you_mean(entry.finlora.scorer, FINLORA_KINDS)}")
        finlora = Finlora(KINDS[entry.finlora.scorer], entry.finlora.max_new_tokens)
    if headline not in kind.metrics:
        raise UserError(f"{where}: key 'headline': must be one of {', '.join(kind.metrics)}, got {headline!r}")
    if entry.prompt_format is not None:
        if entry.prompt_format not in PROMPT_FORMATS:
            raise UserError(f"{where}: key 'prompt_format': unknown {entry.prompt_format!r} "
                            f"(known: {', '.join(PROMPT_FORMATS)}){did_you_mean(entry.prompt_format, PROMPT_FORMATS)}")
    relabel = _relabel(entry, kind, labels, where)
    data = user_path_in(entry.data, base_dir, f"{where}: data")
    train = user_path_in(entry.train, base_dir, f"{where}: train") if entry.train is not None else None
    return Task(
        name=name, data=data, train=train, kind=kind,
        max_new_tokens=entry.max_new_tokens or kind.max_new_tokens, headline=headline, labels=labels,
        prompt_format=entry.prompt_format, description=entry.description, finlora=finlora, relabel=relabel,
        spec=dict(raw),
    )


def parse_registry(raw: object, base_dir: Path, source: str) -> dict[str, Task]:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: task registry must be a JSON object of task name -> entry")
    tasks: dict[str, Task] = {}
    for name, entry in raw.items():
        if name.startswith("_"):
            continue  # "_comment" and friends
        check_task_name(name, source)
        tasks[name] = parse_entry(name, entry, base_dir, source)
    if not tasks:
        raise UserError(f"{source}: no tasks defined")
    return tasks


def load_registry(path: Path | str | None = None) -> dict[str, Task]:
    path = user_path(path, "task registry") if path else DEFAULT_REGISTRY
    try:
        raw = read_json(path, "task registry", object_pairs_hook=unique_keys("task registry"))
    except UserError as exc:
        if str(exc).startswith("duplicate key"):
            raise UserError(f"{path}: {exc}") from None
        raise
    return parse_registry(raw, path.resolve().parent, str(path))


def parse_task_names(values: list[str] | None) -> list[str] | None:
    """--tasks a,b --tasks c -> [a, b, c]; None when the option is absent (every task). Given but naming
    nothing (`--tasks ,`) is an error, not "every task"."""
    if values is None:
        return None
    names = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if not names:
        raise UserError(f"--tasks {','.join(values)!r} names no task; give task names (python -m eval --list-tasks)")
    return names


def select_tasks(registry: dict[str, Task], names: list[str] | None) -> list[Task]:
    if names is None:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        hint = did_you_mean(unknown[0], registry)
        raise UserError(f"unknown task {', '.join(unknown)}{hint} (known tasks: {', '.join(registry)})")
    return [registry[n] for n in dict.fromkeys(names)]


def has_data(task: Task) -> bool:
    return task.data.is_file()


def runnable_tasks(registry: dict[str, Task], names: list[str] | None) -> tuple[list[Task], list[Task]]:
    """(tasks to run, tasks skipped). Named tasks must all have their data file (a missing one is exit 2
    naming the file, before any model loads); with no --tasks, every task whose file is here runs and the
    others are skipped (the registry holds FinLoRA's whole benchmark, most of which is not shipped)."""
    tasks = select_tasks(registry, names)
    present = [t for t in tasks if has_data(t)]
    missing = [t for t in tasks if not has_data(t)]
    if missing and (names is not None or not present):  # nothing to run without it
        t = missing[0]
        more = f" (and {len(missing) - 1} more task files)" if len(missing) > 1 else ""
        raise UserError(f"task {t.name}: test file {repo_relative(t.data)} not found{more}; put the file there "
                        f"(a FinLoRA task: copy FinLoRA's data/test/{t.data.name}); python -m eval --list-tasks")
    return present, missing


def for_scoring(task: Task, mode: str, encoder: str | None) -> Task:
    """The task as `mode` evaluates it. standard: the registry's kind; a free-text task's headline is
    BERTScore F1 when an encoder is given (unless the entry names its headline). finlora: the kind and
    answer budget of the task's `finlora` block, FinLoRA's raw prompt (eval/runner.py), or one line saying
    why the task cannot be scored that way."""
    if mode == "standard":
        if task.kind.free_text and encoder and "headline" not in task.spec:
            return replace(task, headline=ENCODER_HEADLINE)
        return task
    if task.finlora is None:
        raise UserError(f"task {task.name}: no FinLoRA rule (a 'finlora' block in its registry entry), so "
                        f"--scoring finlora cannot score it; use --scoring standard or add the block")
    kind = task.finlora.kind
    if kind.needs_encoder and not encoder:
        raise UserError(f"task {task.name}: FinLoRA scores it with BERTScore (ProsusAI/finbert); give "
                        f"--bertscore-model LOCAL_FOLDER (a local copy of the encoder)")
    return replace(task, kind=kind, max_new_tokens=task.finlora.max_new_tokens, headline=kind.headline,
                   labels=None, prompt_format="raw")


@dataclass(frozen=True)
class TaskData:
    task: Task
    rows: list[dict]  # {"id": line index (0-based), "context": str, "target": str}
    labels: tuple[str, ...] | None
    sha256: str

    def head(self, limit: int | None) -> TaskData:
        """The first `limit` rows (file order); the data hash stays the file's."""
        if limit is None:
            return self
        return TaskData(task=self.task, rows=self.rows[:limit], labels=self.labels, sha256=self.sha256)


def relabelled(task: Task, targets: list[str]) -> list[str]:
    """Targets as the task scores them: the registry's `relabel` map applied (unmapped targets unchanged)."""
    mapping = dict(task.relabel)
    return [mapping.get(t, t) for t in targets] if mapping else targets


def load_task_data(task: Task) -> TaskData:
    """Read and validate every line (so a malformed line stops the run before any model loads)."""
    require_file(task.data, f"task {task.name}: data file")
    lines = list(read_jsonl(task.data, ("context", "target"), f"task {task.name}: data file"))
    targets = relabelled(task, task.kind.normalize_targets([obj["target"] for _, obj in lines]))  # FinLoRA's pandas rule
    rows: list[dict] = []
    for (lineno, obj), target in zip(lines, targets, strict=True):
        problem = task.kind.target_problem(target, task.labels)
        if problem:
            raise UserError(f"{task.data}:{lineno}: target {obj['target']!r} {problem}")
        rows.append({"id": lineno - 1, "context": obj["context"], "target": target})
    if not rows:
        raise UserError(f"task {task.name}: data file {task.data} has no rows")
    labels = task.labels or task.kind.derive_labels([r["target"] for r in rows])
    return TaskData(task=task, rows=rows, labels=labels, sha256=sha256_file(task.data))
