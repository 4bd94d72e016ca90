"""docs/registry.md's generated tables: the `Entry` keys (from the model's fields), the learning keys
compared with FinLoRA's cards, and where FinLoRA's registry JSON and its published cards disagree
(from the copies under data/finlora/, lora/recipe/finlora_cards.py), so none of them can drift.

    python -m lora.recipe.registry_doc            # rewrites the tables in docs/registry.md
    python -m lora.recipe.registry_doc --check    # exit 1 when docs/registry.md differs (tests run this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import typing

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from lora.core.files import REPO_ROOT, write_atomic
from lora.recipe import finlora_cards
from lora.recipe.registry import FINLORA_KEYS, Entry

DOC = REPO_ROOT / "docs" / "registry.md"
BEGIN, END = "<!-- keys:{which} begin (python -m lora.recipe.registry_doc) -->", "<!-- keys:{which} end -->"


def _type(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(json.dumps(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        item = args[0]
        fields = getattr(item, "model_fields", None)
        return f"list of {{{', '.join(fields)}}}" if fields else f"list of {_type(item)}"
    if args:
        return " or ".join(_type(a) for a in args if a is not type(None))
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    signs = {Ge: ("≥", "ge"), Gt: (">", "gt"), Le: ("≤", "le"), Lt: ("<", "lt")}
    parts = []
    for m in info.metadata:
        for cls, (sign, attr) in signs.items():
            if isinstance(m, cls):
                parts.append(f"{sign} {getattr(m, attr):,}".replace(",", "_"))
    return f" ({', '.join(parts)})" if parts else ""


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return json.dumps(info.default_factory())
    return json.dumps(info.default)


def table(keys: list[str]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys:
        info = Entry.model_fields[key]
        rows.append(f"| `{key}` | {_type(info.annotation)}{_bounds(info)} | {_default(info)} | {info.description} |")
    return "\n".join(rows)


def learning_table() -> str:
    rows = ["| compared (changes what is learned) | excluded card key | why it does not change training |",
            "|---|---|---|"]
    excluded = list(finlora_cards.EXCLUDED.items())
    for i in range(max(len(finlora_cards.LEARNING_KEYS), len(excluded))):
        key = f"`{finlora_cards.LEARNING_KEYS[i]}`" if i < len(finlora_cards.LEARNING_KEYS) else ""
        ex, why = (f"`{excluded[i][0]}`", excluded[i][1]) if i < len(excluded) else ("", "")
        rows.append(f"| {key} | {ex} | {why} |")
    return "\n".join(rows)


def _cell(value) -> str:
    return f"`{value}`" if value is not None else "(absent)"


def _we_follow(key: str) -> str:
    if key in finlora_cards.FOLLOW_CARDS_OVER_GENERATOR:
        return "the card, everywhere (`tokenizer_type` is never rendered: axolotl's AutoTokenizer)"
    if key == "base_model":
        return "the JSON: the card's repo is an ungated copy of the same weights (`BASE_MODEL_ALIASES`)"
    return "the card in our catalogue; FinLoRA's file passed with `--config-json` trains what its JSON says"


def disagreement_table() -> str:
    rows_in = finlora_cards.json_card_disagreements()
    runs = {(r["file"], r["run"]) for r in rows_in}
    with_card = sum(name in finlora_cards.cards() for runs_ in finlora_cards.finlora_registries().values()
                    for name in runs_)
    per_key: dict[str, int] = {}
    for r in rows_in:
        per_key[r["key"]] = per_key.get(r["key"], 0) + 1
    counts = ", ".join(f"`{k}` {n}" for k, n in sorted(per_key.items(), key=lambda kv: -kv[1]))
    rows = [f"{len(rows_in)} disagreements ({counts}) in {len(runs)} of the {with_card} runs of FinLoRA's "
            "registry files that have a published card.", "",
            "| FinLoRA file | run | key | FinLoRA JSON / its generator | published card | we follow |",
            "|---|---|---|---|---|---|"]
    for r in rows_in:
        rows.append(f"| {r['file']} | {r['run']} | `{r['key']}` | {_cell(r['json'])} | {_cell(r['card'])} "
                    f"| {_we_follow(r['key'])} |")
    return "\n".join(rows)


def tables() -> dict[str, str]:
    ours = [k for k in Entry.model_fields if k not in FINLORA_KEYS]
    return {"finlora": table(list(FINLORA_KEYS)), "ours": table(ours), "learning": learning_table(),
            "disagreements": disagreement_table()}


def updated(text: str) -> str:
    for which, body in tables().items():
        begin, end = BEGIN.format(which=which), END.format(which=which)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: markers for the {which!r} table are missing ({begin})")
        text = pattern.sub(lambda _m, b=begin, e=end, t=body: f"{b}\n{t}\n{e}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report a stale docs/registry.md, write nothing")
    args = p.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(REPO_ROOT)} is stale: run python -m lora.recipe.registry_doc", file=sys.stderr)
            return 1
        return 0
    write_atomic(DOC, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
