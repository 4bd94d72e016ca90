"""Train a named recipe: python finetune.py <name> [--dry-run | --list | --config-json PATH]

See lora/cli.py for every flag, README.md for the walk-through.
"""
import sys

from lora.cli import main

if __name__ == "__main__":
    sys.exit(main())
