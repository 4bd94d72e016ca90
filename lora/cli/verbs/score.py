"""finlora score --task T --predictions FILE: score a predictions file (one {"output": …, "target": …} per line)
with a task's metric and print the metrics as JSON. No model is loaded.

    finlora score --task fpb --predictions eval_results/demo/predictions/<row>/fpb.jsonl
"""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

from eval.tasks import load_registry, load_task_data, select_tasks
from lora.core.errors import UserError
from lora.core.files import require_file, user_path
from lora.core.jsonl import read_jsonl


def register(p) -> None:
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help="JSONL file; eval's own predictions/<row>/<task>.jsonl works")
    p.add_argument("--tasks-json", help="another task registry (default: eval/tasks.json)")


def read_predictions(path: Path) -> tuple[list[str], list[str]]:
    require_file(path, "predictions file")
    outputs, targets = [], []
    for _, obj in read_jsonl(path, ("output", "target"), "predictions file"):
        outputs.append(obj["output"])
        targets.append(obj["target"])
    if not outputs:
        raise UserError(f"{path}: no predictions")
    return outputs, targets


def run(args: Namespace) -> int:
    task = select_tasks(load_registry(args.tasks_json), [args.task])[0]
    outputs, targets = read_predictions(user_path(args.predictions, "predictions file"))
    kind = task.kind
    labels = task.labels
    if kind.has_labels and labels is None:
        labels = load_task_data(task).labels  # the registry leaves the label set to the data
    for i, t in enumerate(targets, start=1):
        problem = kind.target_problem(kind.normalize_target(t), labels)
        if problem:
            raise UserError(f"{args.predictions}:{i}: target {t!r} {problem}")
    if kind.needs_encoder or kind.extract is not None:
        raise UserError(f"task {task.name}: kind {kind.name} needs the prompts (or an encoder); `score` re-scores "
                        "with standard kinds only")
    metrics, _ = kind.score(outputs, targets, labels)
    print(json.dumps({"task": task.name, "kind": kind.name, "headline": task.headline, **metrics}, indent=2))
    return 0
