"""finlora render [NAME …]: write recipes/<name>.yaml for every entry of the registry (or those named).

    finlora render                          # every entry
    finlora render sentiment_smollm2_cpu    # one
    finlora render --check                  # list stale or missing recipes, write nothing; exit 1 when any

No validation by axolotl here (it takes seconds per recipe): `finlora train NAME --dry-run` renders one entry,
validates it with axolotl's own validator and prints the launch command.
"""
from __future__ import annotations

from argparse import Namespace

from lora.cli.options import add_registry
from lora.core.files import repo_relative
from lora.recipe.render import check_recipes, write_recipes


def register(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="entries to render (default: every entry)")
    add_registry(p)
    p.add_argument("--check", action="store_true", help="report stale recipes, write nothing (exit 1 when any)")


def run(args: Namespace) -> int:
    names = tuple(args.names)  # each is checked by the registry (unknown: one line, exit 2) before any write
    if args.check:
        problems = check_recipes(args.config_json, args.recipes_dir, names)
        for problem in problems:
            print(problem)
        if problems:
            print("run: finlora render   (re-renders every recipe)")
        return 1 if problems else 0
    for path in write_recipes(args.config_json, args.recipes_dir, names):
        print(repo_relative(path))
    return 0
