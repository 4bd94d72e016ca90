"""finlora demo: show what you trained: the base and each chosen adapter answer the same text side by side, in a browser.

    finlora demo                                   # http://127.0.0.1:7860, adapters from lora_adapters/
    finlora demo --adapters /tmp/adapters --port 7861
    finlora demo --port 0                          # any free port (the URL is printed)

The work is lora/use/demo.py (decide, then do); this module is its options.
"""
from __future__ import annotations

from argparse import Namespace

from lora.use import demo
from lora.use.demo import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PORT, PRESET_ROWS


def register(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    p.add_argument("--adapters", default="lora_adapters", help="folder of adapters (default lora_adapters/)")
    p.add_argument("--base-model", help="a local base folder, when the adapters' recorded one is elsewhere")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="default answer budget")
    p.add_argument("--preset-rows", type=int, default=PRESET_ROWS, help="example rows offered per task")


def run(args: Namespace) -> int:
    return demo.serve(demo.plan(args))
