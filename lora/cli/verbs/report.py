"""finlora report OUT: re-lay an earlier eval's OUT/results.json in another layout; writes the layout's files into
OUT and prints its table. No model is loaded.

    finlora report eval_results/finlora --layout finlora   # FinLoRA's table layout, its published numbers, a PNG
"""
from __future__ import annotations

import importlib
import sys
from argparse import Namespace

from lora.core.errors import UserError, did_you_mean
from lora.core.files import check_writable_dir, user_path

# --layout NAME -> (module, what it shows). The module has read_results(out), write_report(out, results, argv)
# -> the printed table, and OUTPUTS (the file names it writes into OUT); it is imported only when used (a
# layout may draw with matplotlib), so `report --help` imports nothing heavy.
REPORT_LAYOUTS = {
    "finlora": ("eval.finlora_layout", "task rows × FinLoRA's method columns, its published numbers beside ours, "
                "and a PNG panel per task"),
}


def register(p) -> None:
    p.add_argument("out", metavar="OUT", help="the --out folder of an earlier run (holds results.json)")
    p.add_argument("--layout", default="finlora", metavar="NAME",
                   help="; ".join(f"{k}: {v[1]}" for k, v in REPORT_LAYOUTS.items()) + " (default: finlora)")


def run(args: Namespace) -> int:
    if args.layout not in REPORT_LAYOUTS:
        hint = did_you_mean(args.layout, REPORT_LAYOUTS, cutoff=0.5)
        raise UserError(f"unknown layout {args.layout!r}{hint} (known: {', '.join(REPORT_LAYOUTS)})")
    layout = importlib.import_module(REPORT_LAYOUTS[args.layout][0])
    out = user_path(args.out, "OUT")
    results = layout.read_results(out)
    check_writable_dir(out, "OUT")  # before rendering: a read-only folder is one line, not a traceback
    print(layout.write_report(out, results, list(args.invocation)), end="")
    print(f"wrote {', '.join(f'{out}/{name}' for name in layout.OUTPUTS)}", file=sys.stderr)
    return 0
