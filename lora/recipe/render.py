"""Entry -> Axolotl YAML. `recipe_inputs` resolves paths and profile choices; `render` is pure text.

    finlora render                 # every entry -> recipes/<name>.yaml (python finetune.py NAME --dry-run: one)
    finlora render --check         # fails when a committed recipe differs from its entry

Paths inside a recipe are relative to the repository root (launches run from there), so a recipe
means the same thing on every machine; only files outside the repository are written absolute.
"""
from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from lora.core.files import REPO_ROOT, repo_relative, write_atomic
from lora.core.precision import cpu_bf16_blocker
from lora.core.prompts import template_for
from lora.recipe.command import build_command
from lora.recipe.defaults import Resolved
from lora.recipe.profiles import PROFILES, HardwareProfile, attention_for
from lora.recipe.registry import Entry, Registry, UserError, load_registry

TEMPLATES_DIR = REPO_ROOT / "templates"
RECIPE_TEMPLATE = "axolotl.yaml.j2"
DEFAULT_REGISTRY = REPO_ROOT / "finetune_configs.json"
DEFAULT_RECIPES_DIR = REPO_ROOT / "recipes"
DEFAULT_ADAPTERS_DIR = REPO_ROOT / "lora_adapters"
PREPARED_DIR = REPO_ROOT / ".cache" / "axolotl_prepared"


def deepspeed_config_path(stage: int) -> Path:
    return TEMPLATES_DIR / "deepspeed" / f"zero{stage}.json"


@dataclass(frozen=True)
class RecipeInputs:
    """Everything the template needs, resolved; render() turns it into text and nothing else."""

    name: str
    entry: Entry
    resolved: Resolved  # the effective values; the template reads these, never the entry's nullable keys
    profile: HardwareProfile
    registry: str  # as shown in the header
    registry_flag: str  # " --config-json X" unless the default registry
    base_model: str
    datasets: tuple[dict, ...]  # {"path", "split"}
    output_dir: str
    prepared_path: str
    deepspeed_config: str | None
    zero_stage: int | None
    save_steps: int | None
    saves_per_epoch: int | None
    launch_command: str
    lora_kernels: bool
    prompt_template: str = field(default="")
    attention: str = "sdpa"  # attn_implementation as rendered: the entry's, else the profile's (launch may upgrade)
    # "auto" (cpu profile: the launch resolves it, lora/core/precision.py), "fp32" or "bf16" (written into the keys)
    precision: str = "auto"
    precision_why: str = ""  # for a named precision: who named it (the user, or what rules bf16 out)
    precision_flag: str = ""  # " --precision X" when the user named one


def dataset_splits(path: str, weight: float) -> list[dict]:
    """A weight as axolotl dataset entries: whole copies, then a head slice for the fraction.

    Axolotl concatenates its datasets (no de-duplication by default), so weight 2 is the file
    twice and weight 0.25 is `train[:25%]`, its first quarter: exact, deterministic, and the
    recipe does not depend on the file's row count.
    """
    copies, fraction = divmod(round(weight * 100), 100)
    splits = [{"path": path, "split": "train"} for _ in range(copies)]
    if fraction:
        splits.append({"path": path, "split": f"train[:{fraction}%]"})
    return splits


def checkpointing(entry: Entry) -> dict:
    """Checkpoint about four times per run so an interrupted run can resume."""
    if entry.max_steps:
        return {"save_steps": max(1, math.ceil(entry.max_steps / 4)), "saves_per_epoch": None}
    return {"save_steps": None, "saves_per_epoch": 4}


def recipe_precision(profile: HardwareProfile, entry: Entry, requested: str) -> tuple[str, str]:
    """(what the recipe's keys say, why): a GPU profile's own choice; on the CPU the user's named precision,
    fp32 where the entry rules bf16 out, else "auto", which renders fp32's keys and is resolved at launch, so
    the recipe never depends on the machine that rendered it (lora/core/precision.py)."""
    if profile.accelerator != "cpu":
        return ("bf16" if profile.bf16 else "fp32"), f"the {profile.name} profile's"
    if requested != "auto":
        return requested, f"--precision {requested}"
    blocker = cpu_bf16_blocker(entry.quant_bits, entry.resolved.zero_stage)
    return ("fp32", blocker) if blocker else ("auto", "")


def launch_command_for(profile: HardwareProfile, recipe_path: str, zero_stage: int | None,
                       precision: str = "auto") -> str:
    """The command the header documents (the launcher builds the real argv for the GPUs it finds)."""
    cpu = profile.accelerator == "cpu"
    argv = build_command(
        recipe_path,
        num_processes=profile.num_gpus or (2 if cpu and zero_stage else 1),  # ZeRO shards across >= 2 ranks
        cpu=cpu,
        deepspeed_config=repo_relative(deepspeed_config_path(zero_stage)) if zero_stage else None,
        mixed_precision="bf16" if precision == "bf16" else profile.mixed_precision,
    )
    return shlex.join(argv)


def recipe_inputs(
    registry: Registry,
    name: str,
    entry: Entry | None = None,
    recipes_dir: Path = DEFAULT_RECIPES_DIR,
    adapters_dir: Path = DEFAULT_ADAPTERS_DIR,
    precision: str = "auto",
) -> RecipeInputs:
    """Resolve paths and profile choices for `name` (its registry entry, or `entry` with CLI overrides).
    precision: --precision (auto, fp32, bf16); only cpu-profile recipes take it (recipe_precision)."""
    entry = entry if entry is not None else registry.get(name)
    profile = PROFILES[entry.profile]
    base_model = registry.resolve_base_model(entry)
    if Path(base_model).is_absolute():
        base_model = repo_relative(base_model)

    datasets: list[dict] = []
    sources = [(entry.dataset_path, 1.0)] + [(d.path, d.weight) for d in entry.extra_datasets]
    for raw_path, weight in sources:
        resolved = registry.resolve_path(raw_path)
        datasets += dataset_splits(repo_relative(resolved), weight)

    resolved = entry.resolved
    stage = resolved.zero_stage
    recipe_path = repo_relative(recipes_dir / f"{name}.yaml")
    written_precision, precision_why = recipe_precision(profile, entry, precision)
    default_registry = registry.path == DEFAULT_REGISTRY.resolve()
    shown_registry = repo_relative(registry.path)
    return RecipeInputs(
        name=name,
        entry=entry,
        resolved=resolved,
        profile=profile,
        registry=shown_registry,
        registry_flag="" if default_registry else f" --config-json {shlex.quote(shown_registry)}",
        base_model=base_model,
        datasets=tuple(datasets),
        output_dir=repo_relative(adapters_dir / name),
        prepared_path=repo_relative(PREPARED_DIR),
        deepspeed_config=repo_relative(deepspeed_config_path(stage)) if stage else None,
        zero_stage=stage,
        **checkpointing(entry),
        launch_command=launch_command_for(profile, recipe_path, stage, written_precision),
        # axolotl's kernels support neither DoRA nor dropout; keep them off unless both allow it
        lora_kernels=profile.lora_kernels and not entry.peft_use_dora and resolved.lora_dropout == 0,
        prompt_template=template_for(resolved.prompt_format).replace("{context}", "{instruction}"),
        attention=attention_for(profile, entry.attention, flash_importable=False),  # the launch may add flash-attn
        precision=written_precision,
        precision_why=precision_why,
        precision_flag=f" --precision {precision}" if precision != "auto" and profile.accelerator == "cpu" else "",
    )


# Characters that must never reach the recipe raw: everything YAML's reader refuses (C0/C1 controls,
# DEL, U+FFFE/FFFF, surrogates) and every line break it honours (LF, CR, NEL, U+2028, U+2029), since
# a line break inside a `#` comment ends the comment and turns the rest into real keys.
_YAML_UNSAFE = re.compile(r"[^\x09\x20-\x7E\xA0-\u2027\u202A-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def comment_text(value: object) -> str:
    """Text for a `#` comment line: every unsafe character (line breaks included) becomes a space."""
    return _YAML_UNSAFE.sub(" ", str(value))


def yaml_scalar(value: object) -> str:
    """A YAML double-quoted scalar (JSON syntax), with the characters JSON leaves raw escaped too."""
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def template_environment() -> jinja2.Environment:
    """The Jinja environment of every template under templates/ (recipes, SkyPilot tasks)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # JSON scalars are valid YAML; ensure_ascii=False keeps non-ASCII text readable.
    env.filters["yaml_str"] = lambda v: yaml_scalar(str(v))
    env.filters["yaml"] = yaml_scalar
    env.filters["comment"] = comment_text
    return env


def template_keys() -> frozenset[str]:
    """The top-level keys the template can write (read off its own source)."""
    source = (TEMPLATES_DIR / RECIPE_TEMPLATE).read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([a-z_0-9]+):", source, flags=re.MULTILINE))


def render(inputs: RecipeInputs) -> str:
    text = template_environment().get_template(RECIPE_TEMPLATE).render(**vars(inputs))
    parsed = yaml.safe_load(text)  # a template bug must fail here, not inside axolotl on a pod
    smuggled = set(parsed) - template_keys()
    if smuggled:  # a value escaped its comment or quotes: never hand such a recipe to axolotl
        raise UserError(f"entry {inputs.name!r}: the rendered recipe gained keys the template does not write "
                        f"({', '.join(sorted(smuggled))}); remove control characters from the entry")
    return text


def validate_with_axolotl(recipe_text: str, entry: Entry) -> None:
    """Run axolotl's own schema validation on the rendered recipe, with the profile's capabilities."""
    import torch
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    profile = PROFILES[entry.profile]
    gpu = profile.accelerator == "cuda"
    recipe = yaml.safe_load(recipe_text)
    # A cpu recipe in bf16 launches only where lora/core/precision.py found bf16 matmuls on the CPU; axolotl's
    # GPU-only notion of the capability would just warn "Training will fail".
    capabilities = {"bf16": profile.bf16 or recipe.get("bf16") is True, "n_gpu": max(1, profile.num_gpus), "fp8": False,
                    "compute_capability": "sm_86" if gpu else None}
    env_capabilities = {"torch_version": torch.__version__.split("+")[0]}
    try:
        validate_config(DictDefault(recipe), capabilities=capabilities,
                        env_capabilities=env_capabilities)
    except Exception as exc:  # noqa: BLE001 - axolotl raises ValueError / pydantic errors; one line for the user
        raise UserError(f"axolotl rejects the rendered recipe: {exc}") from None


def check_recipes(registry_path: Path = DEFAULT_REGISTRY, recipes_dir: Path = DEFAULT_RECIPES_DIR,
                  names: tuple[str, ...] = ()) -> list[str]:
    """Names whose committed recipe is missing or differs from a fresh render, plus orphan files (all entries
    when no names are given)."""
    registry = load_registry(registry_path)
    problems = []
    for name in names or tuple(registry.entries):
        text = render(recipe_inputs(registry, name, recipes_dir=recipes_dir))
        path = recipes_dir / f"{name}.yaml"
        if not path.is_file():
            problems.append(f"{name}: recipes/{name}.yaml is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: recipes/{name}.yaml is stale")
    if names:
        return problems
    for path in sorted(recipes_dir.glob("*.yaml")):
        if path.name.endswith(".sky.yaml"):
            continue  # SkyPilot tasks (lora/pod/sky.py) depend on launch flags: written per launch, never committed
        if path.stem not in registry.entries:
            problems.append(f"{path.stem}: recipes/{path.name} has no entry in {registry_path.name}")
    return problems


def write_recipes(registry_path: Path = DEFAULT_REGISTRY, recipes_dir: Path = DEFAULT_RECIPES_DIR,
                  names: tuple[str, ...] = ()) -> list[Path]:
    """Render every entry (or those named) into recipes_dir; each name is checked before anything is written."""
    registry = load_registry(registry_path)
    chosen = names or tuple(registry.entries)
    texts = {name: render(recipe_inputs(registry, name, recipes_dir=recipes_dir)) for name in chosen}
    written = []
    for name, text in texts.items():
        path = recipes_dir / f"{name}.yaml"
        write_atomic(path, text)
        written.append(path)
    return written
