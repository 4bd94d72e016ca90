"""python -m lora VERB …  — the `finlora` command where its script is not on PATH (lora/cli)."""
import sys

from lora.cli import main

sys.exit(main())
