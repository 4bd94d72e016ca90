"""Train a named recipe, FinLoRA's way: python finetune.py <name> [--dry-run | --list | --plan | --config-json PATH]

The same as `finlora train <name>` (and `--list` as `finlora list`, `--plan` as `finlora plan`, …): the flags are
translated into the `finlora` verbs by lora/cli/shims.py. README.md walks through it.
"""
import sys

from lora.cli.shims import finetune_main

if __name__ == "__main__":
    sys.exit(finetune_main())
