"""Find adapter folders, read their run.json / adapter_config.json, resolve base models, group by base.

    python -m eval lora_adapters/ --dry-run        # prints what discovery found, loads no model

No model is loaded here: everything is file reads and pure decisions, so it is tested fast.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from eval.errors import InputError
from lora.fsutil import REPO_ROOT, repo_relative
from lora.prompts import DEFAULT_PROMPT_FORMAT, PROMPT_FORMATS

ADAPTER_CONFIG = "adapter_config.json"
RUN_JSON = "run.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass
class Adapter:
    name: str  # the row name in the results
    path: Path
    base_ref: str | None  # as written in run.json / adapter_config.json
    run: dict | None = None  # run.json, when training wrote one
    prompt_format: str | None = None  # from run.json; None: decided per task (--prompt-format / registry)
    template: str | None = None
    error: str | None = None  # set: this row is reported, not evaluated
    config: dict = field(default_factory=dict)
    folder_name: str = ""  # the folder under the argument it was found in; the name when run.json names clash

    @property
    def slug(self) -> str:
        return slugify(self.name)


def slugify(name: str) -> str:
    """A file-name-safe form of a row name (predictions/<slug>/<task>.jsonl)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "adapter"


def _is_checkpoint(part: str) -> bool:
    # Trainer saves intermediate checkpoint-<step>/ folders (with their own adapter_config.json)
    # inside the run folder: they are not the finished adapter.
    return part.startswith("checkpoint-")


def find_adapter_dirs(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """(adapter folder, the argument it was found under), in a stable order. Exits 2 (InputError) for a
    missing argument or an argument holding no adapter."""
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in paths:
        root = Path(arg)
        if not root.exists():
            raise InputError(f"{arg}: no such file or folder")
        if root.is_file():
            if root.name == ADAPTER_CONFIG:
                root = root.parent
            else:
                raise InputError(f"{arg}: expected an adapter folder or a folder containing adapters")
        if (root / ADAPTER_CONFIG).is_file():
            dirs = [root]
        else:
            dirs = sorted(
                cfg.parent
                for cfg in root.rglob(ADAPTER_CONFIG)
                if not any(_is_checkpoint(p) for p in cfg.relative_to(root).parts[:-1])
            )
        if not dirs:
            raise InputError(f"{arg}: no adapters found (no {ADAPTER_CONFIG} in this folder or below it)")
        for d in dirs:
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                found.append((d, root))
    return found


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} unreadable: {exc}"
    except json.JSONDecodeError as exc:
        return None, f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})"
    if not isinstance(obj, dict):
        return None, f"{path.name} is not a JSON object"
    return obj, None


def read_adapter(folder: Path, root: Path) -> Adapter:
    """Everything the run needs to know about one adapter; problems become adapter.error (one row)."""
    default_name = folder.name if folder == root else folder.relative_to(root).as_posix()
    config, err = _read_json(folder / ADAPTER_CONFIG)
    adapter = Adapter(name=default_name, path=folder, base_ref=None, config=config or {}, folder_name=default_name)
    if err:
        adapter.error = err
        return adapter
    run_path = folder / RUN_JSON
    if run_path.is_file():
        run, err = _read_json(run_path)
        if err:
            adapter.error = err
            return adapter
        adapter.run = run
        if isinstance(run.get("name"), str) and run["name"].strip():
            adapter.name = run["name"].strip()
        status = run.get("status")
        if status != "complete":
            adapter.error = f"training did not finish (run.json status: {status})"
        pf = run.get("prompt_format")
        if isinstance(pf, dict) and isinstance(pf.get("template"), str) and "{context}" in pf["template"]:
            adapter.prompt_format = str(pf.get("name") or "run.json")
            adapter.template = pf["template"]
        elif adapter.error is None:
            adapter.error = "run.json has no usable prompt_format.template (with a {context} placeholder)"
        adapter.base_ref = run.get("base_model") or config.get("base_model_name_or_path")
    else:
        adapter.base_ref = config.get("base_model_name_or_path")
    if adapter.error is None:
        adapter.error = check_weights(folder)
    return adapter


def check_weights(folder: Path) -> str | None:
    """Catch a missing or corrupt weights file now (reading only the safetensors header), so it is one
    error row and does not half-inject layers into the shared base later."""
    if (folder / WEIGHT_FILES[0]).is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(folder / WEIGHT_FILES[0]), framework="pt") as f:
                if not list(f.keys()):
                    return f"{WEIGHT_FILES[0]} holds no tensors"
        except Exception as exc:  # noqa: BLE001 - any failure: unreadable
            return f"{WEIGHT_FILES[0]} unreadable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return None
    if (folder / WEIGHT_FILES[1]).is_file():
        return None
    return f"no adapter weights ({' or '.join(WEIGHT_FILES)})"


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
    unique_names(adapters)
    return adapters


# ---------------------------------------------------------------- base models


@dataclass(frozen=True)
class BaseModel:
    ref: str  # as written (hub id or path)
    path: str | None  # a local folder transformers can load, or None
    error: str | None = None


def resolve_base(ref: str, cwd: Path | None = None) -> BaseModel:
    """A local folder for a base reference: an absolute path, a path relative to the repo root
    (how run.json writes it) or to the working folder, or a hub id already in the local HF cache.
    Never downloads: a base that is not here is reported, and its group is skipped."""
    p = Path(ref).expanduser()
    candidates = [p] if p.is_absolute() else [REPO_ROOT / p, (cwd or Path.cwd()) / p]
    for c in candidates:
        if (c / "config.json").is_file():
            return BaseModel(ref=ref, path=str(c.resolve()))
        if c.is_dir():
            return BaseModel(ref=ref, path=None, error=f"base model {ref}: folder {c} has no config.json")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(ref, local_files_only=True)
            if (Path(local) / "config.json").is_file():
                return BaseModel(ref=ref, path=local)
        except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
            pass
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
        base = resolve_base(a.base_ref, cwd)
        key = base.path or base.ref
        groups.setdefault(key, Group(base, [])).adapters.append(a)
    out = list(groups.values())
    if missing:  # reported as error rows; they need no model
        out.append(Group(BaseModel(ref="(none)", path=None, error="no base model named"), missing))
    return out


def prompt_for(adapter: Adapter | None, task_format: str | None, cli_format: str | None) -> tuple[str, str]:
    """(format name, template) a pair is evaluated with: the adapter's own (run.json) first, since that
    is what it was trained on; else --prompt-format, else the task's registry default, else FinLoRA's."""
    if adapter is not None and adapter.template is not None:
        return adapter.prompt_format or "run.json", adapter.template
    name = cli_format or task_format or DEFAULT_PROMPT_FORMAT
    return name, PROMPT_FORMATS[name]
