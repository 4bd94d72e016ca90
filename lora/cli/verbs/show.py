"""finlora show NAME: one entry as the recipe sees it — the keys it sets, the values its defaults set gives the
rest, its hardware profile, its data files, its rendered recipe and its last run.

    finlora show sentiment_smollm2_cpu
    finlora show sentiment_llama_3_1_8b_8bits_r8 --json
"""
from __future__ import annotations

import dataclasses
import json
from argparse import Namespace

from lora.cli.options import add_name, add_registry, run_name
from lora.cli.verbs.list import last_run
from lora.core.files import repo_relative
from lora.recipe.profiles import PROFILES
from lora.recipe.registry import load_registry
from lora.recipe.render import check_recipes
from lora.train.launch import dataset_paths


def register(p) -> None:
    add_name(p)
    add_registry(p)
    p.add_argument("--json", action="store_true", help="one JSON object")


def describe(args: Namespace) -> dict:
    registry = load_registry(args.config_json)
    name = run_name(args)
    entry = registry.get(name)
    recipe = args.recipes_dir / f"{name}.yaml"
    stale = [p for p in check_recipes(registry.path, args.recipes_dir, names=(name,)) if p.startswith(f"{name}:")]
    return {
        "name": name,
        "registry": repo_relative(registry.path),
        "keys": entry.model_dump(mode="json", exclude_unset=True),
        "resolved": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(entry.resolved).items()},
        "variant": entry.variant,
        "profile": {"name": entry.profile, "description": PROFILES[entry.profile].description},
        "data": {repo_relative(p): p.is_file() for p in dataset_paths(registry, entry)},
        "recipe": {"path": repo_relative(recipe), "state": stale[0].split(": ", 1)[1] if stale else "up to date"},
        "last_run": last_run(args.adapters_dir, name),
    }


def run(args: Namespace) -> int:
    facts = describe(args)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(map(len, facts["keys"] | facts["resolved"]))
    print(f"{facts['name']}  ({facts['registry']}; {facts['variant']}; profile {facts['profile']['name']}: "
          f"{facts['profile']['description']})")
    print("keys the entry sets:")
    for k, v in facts["keys"].items():
        print(f"  {k:{width}s}  {json.dumps(v)}")
    print(f"values from the {facts['resolved']['defaults']!r} defaults set (or the profile):")
    for k, v in facts["resolved"].items():
        if k not in facts["keys"]:
            print(f"  {k:{width}s}  {json.dumps(v)}")
    for path, present in facts["data"].items():
        print(f"data: {path} ({'present' if present else 'MISSING'})")
    print(f"recipe: {facts['recipe']['path']} ({facts['recipe']['state']})")
    print(f"last run: {facts['last_run']}")
    return 0
