"""Drive one `finlora` verb from a test as its command line would: `verb_main("merge", argv)` is
`finlora merge ARGV`; `verb_plan("merge", argv)` is that verb's decide step on the parsed options."""
from __future__ import annotations

import importlib

import lora.cli


def verb_main(verb: str, argv: list[str]) -> int:
    return lora.cli.main([verb, *argv])


def verb_plan(verb: str, argv: list[str]):
    return importlib.import_module(f"lora.use.{verb}").plan(lora.cli.parse([verb, *argv]))
