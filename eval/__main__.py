"""python -m eval …: FinLoRA-style entry point, the same as `finlora eval …` (`score`, `report`: `finlora score|report`).

Translated by lora/cli/shims.py; eval/ itself holds the evaluation, not its command line.
"""
import sys

from lora.cli.shims import eval_main

sys.exit(eval_main())
