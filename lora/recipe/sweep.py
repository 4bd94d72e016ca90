"""Sweeps: one registry entry × the product of some key values -> derived entries with readable names.

    python finetune.py sentiment_smollm2_cpu --sweep lora_r=4,8 learning_rate=1e-4,5e-4 --dry-run
    python finetune.py sentiment_smollm2_cpu --sweep lora_r=4,8          # writes the sweep registry, then queues it

A value is read as JSON when it parses (4, 5e-4, true, null, "text", ["q_proj","v_proj"]), else as the
text itself (cosine, all-linear); values are split on the commas outside brackets and quotes. Every
derived entry is the base entry as the user wrote it with the swept keys replaced, validated by the
registry's own schema (lora/recipe/registry.py parse_entry), so a wrong key or value is one line naming it.

Names are `<base>-<key><value>[-<key><value>…]` in the order the keys were given (tiny-lora_r8-
learning_rate0.0005); a name that would break lora/core/names.py's rule or clash falls back to
`<base>-sweep-<hash of the values>`. Pure functions except `write_sweep_registry`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError, did_you_mean
from lora.core.files import write_json_atomic
from lora.core.names import MAX_NAME_LEN, name_problem
from lora.recipe.registry import Entry, Registry, is_local_model_ref, parse_entry

SWEEP_FILE = "sweep.json"
MAX_RUNS_WITHOUT_YES = 64


@dataclass(frozen=True)
class SweepKey:
    key: str
    raws: tuple[str, ...]  # as written, for messages and the summary's columns
    values: tuple  # parsed


@dataclass(frozen=True)
class Derived:
    name: str
    entry: Entry
    swept: dict  # key -> value of this run


def split_values(text: str) -> list[str]:
    """Split on commas outside [], {} and double quotes: `target_modules=["q_proj","v_proj"],all-linear`."""
    parts, depth, quoted, current = [], 0, False, []
    for ch in text:
        if ch == '"' and (not current or current[-1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_value(raw: str):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_sweep(args: list[str]) -> list[SweepKey]:
    """`KEY=V1,V2` arguments -> keys with their values; one UserError per malformed argument."""
    keys: list[SweepKey] = []
    for arg in args:
        key, sep, rest = arg.partition("=")
        key = key.strip()
        if not sep or not key or not rest.strip():
            raise UserError(f"--sweep {arg!r}: write KEY=V1,V2 (e.g. lora_r=4,8)")
        if key not in Entry.model_fields:
            raise UserError(f"--sweep {key}: the registry schema has no key {key!r}{did_you_mean(key, Entry.model_fields)}"
                            " (docs/registry.md lists the keys)")
        if any(k.key == key for k in keys):
            raise UserError(f"--sweep {key}: given twice; list all its values once, comma-separated")
        raws = tuple(v.strip() for v in split_values(rest))
        if any(not r for r in raws):
            raise UserError(f"--sweep {arg!r}: an empty value; separate values with single commas")
        values = tuple(parse_value(r) for r in raws)
        canon = [json.dumps(v, sort_keys=True) for v in values]
        dup = next((r for r, c in zip(raws, canon, strict=True) if canon.count(c) > 1), None)
        if dup is not None:
            raise UserError(f"--sweep {key}: value {dup!r} given twice")
        keys.append(SweepKey(key, raws, values))
    return keys


def run_count(keys: list[SweepKey]) -> int:
    n = 1
    for k in keys:
        n *= len(k.values)
    return n


def _value_text(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    text = value if isinstance(value, str) else "+".join(map(str, value)) if isinstance(value, list) else \
        json.dumps(value, sort_keys=True)
    return re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "_", text)).strip("_.") or "x"


def derived_name(base: str, swept: dict) -> str:
    """Readable when it fits the name rule, else `<base>-sweep-<hash>` (deterministic either way)."""
    name = "-".join([base, *(f"{k}{_value_text(v)}" for k, v in swept.items())])
    if name_problem(name) is None:
        return name
    digest = hashlib.sha256(json.dumps(swept, sort_keys=True).encode()).hexdigest()[:10]
    return f"{base[: MAX_NAME_LEN - 17]}-sweep-{digest}"


def _check_value(base_name: str, raw_entry: dict, key: str, raw: str, value) -> None:
    """One value alone on the base entry: the schema's own message, naming the key and the value."""
    try:
        parse_entry(base_name, {**raw_entry, key: value})
    except UserError as exc:
        why = str(exc).removeprefix(f"entry {base_name!r}: ")
        raise UserError(f"--sweep {key}={raw}: {why}") from None


def expand(registry: Registry, base_name: str, keys: list[SweepKey]) -> list[Derived]:
    """The product of the values over `base_name`, each validated; taken names are refused."""
    base = registry.get(base_name)
    raw_entry = base.model_dump(mode="json", exclude_unset=True)
    for k in keys:
        for raw, value in zip(k.raws, k.values, strict=True):
            _check_value(base_name, raw_entry, k.key, raw, value)
    out: list[Derived] = []
    seen: set[str] = set()
    for combo in itertools.product(*(k.values for k in keys)):
        swept = {k.key: v for k, v in zip(keys, combo, strict=True)}
        name = derived_name(base_name, swept)
        if name in seen or name in registry.entries:
            where = "another combination" if name in seen else f"an entry of {registry.path.name}"
            raise UserError(f"--sweep: derived name {name!r} is already {where}; change the values")
        seen.add(name)
        label = ", ".join(f"{k}={json.dumps(v)}" for k, v in swept.items())
        description = f"sweep of {base_name}: {label}"
        try:
            entry = parse_entry(name, {**raw_entry, **swept, "description": description})
        except UserError as exc:  # a combination the schema refuses (e.g. warmup_steps with warmup_ratio)
            raise UserError(f"--sweep {label}: {str(exc).removeprefix(f'entry {name!r}: ')}") from None
        out.append(Derived(name, entry, swept))
    return out


def _relocated(text: str, registry: Registry, folder: Path, model: bool) -> str:
    """A relative path of the base registry rewritten relative to the sweep file's folder."""
    if model and not is_local_model_ref(text):
        return text  # a hub id
    if Path(text).expanduser().is_absolute():
        return text
    new = os.path.relpath(registry.resolve_path(text), folder.resolve())
    return new if not model or new.startswith("../") else f"./{new}"


def portable_entry(entry: Entry, registry: Registry, folder: Path) -> dict:
    """The entry as written (unset keys left out) with its relative paths valid from `folder`."""
    raw = entry.model_dump(mode="json", exclude_unset=True)
    raw["dataset_path"] = _relocated(raw["dataset_path"], registry, folder, model=False)
    raw["base_model"] = _relocated(raw["base_model"], registry, folder, model=True)
    if raw.get("extra_datasets"):
        raw["extra_datasets"] = [{**d, "path": _relocated(d["path"], registry, folder, model=False)}
                                 for d in raw["extra_datasets"]]
    return raw


def write_sweep_registry(path: Path, derived: list[Derived], registry: Registry) -> None:
    """A registry file like finetune_configs.json (`--list --config-json PATH` reads it); written atomically.
    Each entry's description says which sweep made it; queue.json beside it holds the command."""
    write_json_atomic(path, {d.name: portable_entry(d.entry, registry, path.parent) for d in derived})
