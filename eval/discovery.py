"""Find adapter folders, read their run.json / adapter_config.json, resolve base models, group by base.

    python -m eval lora_adapters/ --dry-run        # prints what discovery found, loads no model

No model is loaded here: everything is file reads and pure decisions, so it is tested fast.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from eval.adapter_tasks import Family, family_of
from lora.core.errors import UserError, one_line
from lora.core.files import (
    ADAPTER_WEIGHT_FILES,
    REPO_ROOT,
    adapter_weights,
    read_json,
    repo_relative,
    stat_kind,
    user_path,
)
from lora.core.prompts import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS
from lora.core.run_record import RunRecord, resolve_portable

ADAPTER_CONFIG = "adapter_config.json"
NO_BASE = "(none)"  # the group of adapters that name no base model (error rows only)


@dataclass
class Adapter:
    name: str  # the row name in the results
    path: Path
    base_ref: str | None  # as written in run.json / adapter_config.json
    run: dict | None = None  # run.json (RunRecord.to_json()), when training wrote one
    prompt_format: str | None = None  # from run.json; None: decided per task (--prompt-format / registry)
    template: str | None = None
    error: str | None = None  # set: this row is reported, not evaluated
    config: dict = field(default_factory=dict)
    folder_name: str = ""  # the folder under the argument it was found in; the name when run.json names clash
    base_from_run: bool = False  # base_ref is run.json's: a path in it is portable (repo or adapter folder)
    family: Family | None = None  # its task family (eval/adapter_tasks.py), decided at discovery
    tasks: tuple[str, ...] | None = None  # the tasks it is evaluated on; None: every loaded task (--tasks)

    @property
    def slug(self) -> str:
        return slugify(self.name)

    def facts(self) -> dict:
        """What results.json records about the adapter."""
        return {"path": repo_relative(self.path), "base_model": self.base_ref, "prompt_format": self.prompt_format,
                "run": self.run, "peft_type": self.config.get("peft_type"), "r": self.config.get("r"),
                "lora_alpha": self.config.get("lora_alpha"), "target_modules": self.config.get("target_modules"),
                "task_family": self.family.name if self.family else None,
                "task_family_source": self.family.source if self.family else None}


def slugify(name: str) -> str:
    """A file-name-safe form of a row name (predictions/<slug>/<task>.jsonl)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "adapter"


def _is_checkpoint(part: str) -> bool:
    # Trainer saves intermediate checkpoint-<step>/ folders (with their own adapter_config.json)
    # inside the run folder: they are not the finished adapter.
    return part.startswith("checkpoint-")


def find_adapter_dirs(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """(adapter folder, the argument it was found under), in a stable order. Exits 2 (UserError) for a
    missing argument or an argument holding no adapter."""
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in paths:
        root = user_path(arg, "adapter path")
        kind = stat_kind(root, "adapter path")
        if kind == "missing":
            raise UserError(f"{arg}: no such file or folder")
        if kind == "file" and root.name == ADAPTER_CONFIG:
            root, kind = root.parent, "dir"
        if kind != "dir":
            raise UserError(f"{arg}: expected an adapter folder or a folder containing adapters")
        dirs = _adapter_dirs_under(root)
        if not dirs:
            raise UserError(f"{arg}: no adapters found (no {ADAPTER_CONFIG} in this folder or below it)")
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                found.append((d, root))
    return found


def _adapter_dirs_under(root: Path) -> list[Path]:
    if (root / ADAPTER_CONFIG).exists():  # a folder by that name is reported on its row, not skipped
        return [root]
    return sorted(
        cfg.parent
        for cfg in root.rglob(ADAPTER_CONFIG)
        if not any(_is_checkpoint(p) for p in cfg.relative_to(root).parts[:-1])
    )


def _read_config(path: Path) -> tuple[dict | None, str | None]:
    try:
        obj = read_json(path, ADAPTER_CONFIG)
    except UserError as exc:
        return None, str(exc)
    if not isinstance(obj, dict):
        return None, f"{path}: {ADAPTER_CONFIG} is not a JSON object"
    return obj, None


def read_adapter(folder: Path, root: Path) -> Adapter:
    """Everything the run needs to know about one adapter; problems become adapter.error (one row)."""
    default_name = folder.name if folder == root else folder.relative_to(root).as_posix()
    config, err = _read_config(folder / ADAPTER_CONFIG)
    adapter = Adapter(name=default_name, path=folder, base_ref=None, config=config or {}, folder_name=default_name)
    if err:
        adapter.error = err
        return adapter
    try:
        run = RunRecord.read(folder)
    except UserError as exc:
        adapter.error = str(exc)
        return adapter
    if run is None:
        adapter.base_ref = config.get("base_model_name_or_path")
    else:
        _apply_run(adapter, run)
    if adapter.error is None:
        adapter.error = check_weights(folder)
    return adapter


def _apply_run(adapter: Adapter, run: RunRecord) -> None:
    adapter.run = run.to_json()
    if run.name.strip():
        adapter.name = one_line(run.name)
    if run.status != "complete":
        adapter.error = f"training did not finish (run.json status: {run.status})"
    if "{context}" in run.prompt_format.template:
        adapter.prompt_format = run.prompt_format.name or "run.json"
        adapter.template = run.prompt_format.template
    elif adapter.error is None:
        adapter.error = "run.json has no usable prompt_format.template (with a {context} placeholder)"
    adapter.base_ref = run.base_model
    adapter.base_from_run = True


def check_weights(folder: Path) -> str | None:
    """Catch a missing or corrupt weights file now (reading only the safetensors header), so it is one
    error row and does not half-inject layers into the shared base later."""
    weights = adapter_weights(folder)
    if weights is None:
        return f"no adapter weights ({' or '.join(ADAPTER_WEIGHT_FILES)})"
    if weights.suffix != ".safetensors":
        return None
    try:
        keys = safetensors_keys(weights)
    except Exception as exc:  # noqa: BLE001 - any failure: unreadable
        return f"{weights.name} unreadable: {one_line(str(exc)) or type(exc).__name__}"
    return None if keys else f"{weights.name} holds no tensors"


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from the header alone (numpy framework: no torch import for --dry-run)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return list(f.keys())


def unique_names(adapters: list[Adapter]) -> None:
    """Row names and their file slugs must be unique (and 'base' is the base row). Clashing names (two
    runs whose run.json say the same name, e.g. copies of one adapter) fall back to the folder name under
    the argument, then to the repo-relative path, then get numbered."""
    def is_base(name: str) -> bool:
        return name == "base" or name.startswith(("base ", "base[", "base:", "base("))

    for fallback in (lambda a: a.folder_name or a.name, lambda a: repo_relative(a.path)):
        taken: dict[str, int] = {}
        for a in adapters:
            taken[a.slug] = taken.get(a.slug, 0) + 1
        for a in adapters:
            if taken[a.slug] > 1 or is_base(a.name):
                a.name = fallback(a)
    seen: set[str] = set()
    for a in adapters:
        slug, i = a.slug, 2
        while slug in seen or is_base(a.name):  # still clashing after the path (e.g. "a b" vs "a_b"): number them
            a.name = f"{a.name}#{i}"
            slug, i = a.slug, i + 1
        seen.add(slug)


def discover(paths: list[str | Path]) -> list[Adapter]:
    adapters = [read_adapter(d, root) for d, root in find_adapter_dirs(paths)]
    for a in adapters:  # before unique_names: the names as written (run.json name, folder)
        a.family = family_of(a.run, [a.name, a.folder_name, a.path.name])
    unique_names(adapters)
    return adapters


# ---------------------------------------------------------------- base models


@dataclass(frozen=True)
class BaseModel:
    ref: str  # as written (hub id or path)
    path: str | None  # a local folder transformers can load, or None
    error: str | None = None


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _local_candidates(ref: str, cwd: Path | None, adapter_dir: Path | None) -> list[Path]:
    if adapter_dir is not None:  # run.json: repo-relative, else relative to the adapter folder
        return [resolve_portable(ref, adapter_dir)]
    p = user_path(ref, "base model")
    return [p] if p.is_absolute() else [REPO_ROOT / p, (cwd or Path.cwd()) / p]


def _from_hub_cache(ref: str) -> str | None:
    if not HUB_ID.fullmatch(ref):
        return None
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(ref, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None
    return local if (Path(local) / "config.json").is_file() else None


def resolve_base(ref: str, cwd: Path | None = None, adapter_dir: Path | None = None) -> BaseModel:
    """A local folder for a base reference: an absolute path; for run.json's (adapter_dir given) a portable
    path, repo-relative or relative to the adapter folder; for --base-model and adapter_config.json a path
    relative to the repo root or the working folder; or a hub id already in the local HF cache.
    Never downloads: a base that is not here is reported, and its group is skipped."""
    try:
        for c in _local_candidates(ref, cwd, adapter_dir):
            if stat_kind(c / "config.json", "base model") == "file":
                return BaseModel(ref=ref, path=str(c.resolve()))
            if stat_kind(c, "base model") == "dir":
                return BaseModel(ref=ref, path=None, error=f"base model {ref}: folder {c} has no config.json")
    except UserError as exc:
        return BaseModel(ref=ref, path=None, error=str(exc))
    local = _from_hub_cache(ref)
    if local is not None:
        return BaseModel(ref=ref, path=local)
    return BaseModel(ref=ref, path=None, error=f"base model {ref} is not available locally (pass --base-model PATH)")


@dataclass
class Group:
    base: BaseModel
    adapters: list[Adapter]


def group_by_base(adapters: list[Adapter], override: str | None = None, cwd: Path | None = None) -> list[Group]:
    """One group per base model, in order of first appearance; --base-model puts everyone in one."""
    if override is not None:
        return [Group(resolve_base(override, cwd), list(adapters))]
    groups: dict[str, Group] = {}
    missing: list[Adapter] = []
    for a in adapters:
        if not a.base_ref:
            if a.error is None:
                a.error = "no base model in run.json or adapter_config.json (pass --base-model PATH)"
            missing.append(a)
            continue
        base = resolve_base(a.base_ref, cwd, a.path if a.base_from_run else None)
        key = base.path or base.ref
        groups.setdefault(key, Group(base, [])).adapters.append(a)
    out = list(groups.values())
    if missing:  # reported as error rows; they need no model
        out.append(Group(BaseModel(ref=NO_BASE, path=None, error="no base model named"), missing))
    return out


def prompt_for(adapter: Adapter | None, task_format: str | None, cli_format: str | None) -> tuple[str, str]:
    """(format name, template) a pair is evaluated with: the adapter's own (run.json) first, since that
    is what it was trained on; else --prompt-format, else the task's registry default, else FinLoRA's."""
    if adapter is not None and adapter.template is not None:
        return adapter.prompt_format or "run.json", adapter.template
    name = cli_format or task_format or DEFAULT_PROMPT_FORMAT
    return name, PROMPT_FORMATS[name]
