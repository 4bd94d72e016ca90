"""finlora list: every entry of the registry with its model, quant, rank, variant, profile, prompt, last run, data.

    finlora list
    finlora list --config-json path/to/FinLoRA/lora/finetune_configs.json
"""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from lora.cli.options import add_registry
from lora.core.compute import short
from lora.core.errors import UserError
from lora.core.files import repo_relative
from lora.core.run_record import RunRecord
from lora.recipe.registry import Registry, load_registry
from lora.recipe.render import DEFAULT_ADAPTERS_DIR
from lora.train.launch import missing_datasets


def register(p) -> None:
    add_registry(p)


def run(args: Namespace) -> int:
    print(format_list(load_registry(args.config_json), args.adapters_dir))
    return 0


def data_status(registry: Registry, name: str) -> str:
    missing = missing_datasets(registry, registry.get(name))
    return "yes" if not missing else "MISSING " + ", ".join(missing)


def last_run(adapters_dir: Path, name: str) -> str:
    """The run.json in lora_adapters/NAME: its status and what it used (wall time, peak RSS; lora/core/compute.py)."""
    try:
        record = RunRecord.read(adapters_dir / name)
    except UserError:
        return "unreadable run.json"
    if record is None:
        return "–"
    if record.compute is None:  # a run.json from before compute tracking, or a run still going
        return record.status
    train = next((p for p in record.compute.phases if p.name == "train"), record.compute.total)
    return f"{record.status} {short(train)}"


def format_list(registry: Registry, adapters_dir: Path = DEFAULT_ADAPTERS_DIR) -> str:
    headers = ("name", "base model", "quant", "r", "variant", "profile", "prompt", "last run", "data present?")
    rows = []
    for name, e in registry.entries.items():
        quant = "16-bit" if e.quant_bits == 16 else f"{e.quant_bits}-bit"
        rows.append((name, e.base_model, quant, str(e.lora_r), e.variant, e.profile, e.resolved.prompt_format,
                     last_run(adapters_dir, name), data_status(registry, name)))
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    out.append(f"{len(rows)} entries in {repo_relative(registry.path)}; "
               "entries with MISSING data refuse to launch until the file is there (see data/README.md); "
               f"last run: {repo_relative(adapters_dir)}/NAME/run.json status, training wall time, peak RSS")
    return "\n".join(out)
