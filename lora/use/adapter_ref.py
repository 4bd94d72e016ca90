"""Which adapter a `NAME|PATH` argument means, and everything merge and infer need to know about it.

    finlora merge sentiment_smollm2_cpu                       # NAME: lora_adapters/NAME
    finlora infer lora_adapters/x --checkpoint latest "text"   # PATH, an unfinished run's newest checkpoint

File reads and decisions only (no model, no torch), shared by lora/use/merge.py and lora/use/infer.py so both
refuse the same bad input with the same line: an unknown name, an unfinished run (naming the checkpoint
`--checkpoint` would use), a base that is not on this machine, a run.json without a prompt template.
The base is resolved exactly as eval resolves it (eval/discovery.py resolve_base), the prompt is the
one run.json says training used, and the training quantization is run.json's `entry.quant_bits`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from eval.adapter_tasks import Family, family_of
from eval.discovery import ADAPTER_CONFIG, check_weights, resolve_base
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, read_json, repo_relative, sha256_file, user_path
from lora.core.names import check_name
from lora.core.prompts import PROMPT_FORMATS
from lora.core.run_record import RUN_JSON, RunRecord
from lora.train import outputs
from lora.train.outputs import CHECKPOINT, checkpoint_step

ADAPTERS_DIR = REPO_ROOT / "lora_adapters"


@dataclass(frozen=True)
class AdapterRef:
    name: str  # the run name (run.json), else the folder name
    run_dir: Path  # the folder named on the command line (run.json lives here)
    weights_dir: Path  # run_dir, or a checkpoint-N folder under it
    checkpoint: str | None  # "checkpoint-N" when --checkpoint chose one
    run: RunRecord | None
    run_sha256: str | None  # digest of run.json as read: the provenance of prompt, base and data
    base_ref: str  # as written in run.json / adapter_config.json (or --base-model)
    base_path: str  # the local folder it resolved to
    prompt_format: str  # name, for messages and records
    template: str  # the training prompt, with one {context}
    quant: int | None  # 4/8: the base was loaded in 4/8-bit for training; None: full precision
    family: Family

    def describe(self) -> str:
        where = repo_relative(self.weights_dir)
        quant = f"{self.quant}-bit" if self.quant else "full-precision"
        return f"{where} (base {self.base_ref}, {quant} in training; prompt {self.prompt_format})"


def adapter_folder(arg: str, adapters_dir: Path = ADAPTERS_DIR) -> Path:
    """A folder given as a path (it exists, or holds a path separator) or a run name under lora_adapters/."""
    p = user_path(arg, "adapter")
    if p.is_dir() or "/" in arg or "\\" in arg:
        if not p.is_dir():
            raise UserError(f"{arg}: no such adapter folder")
        return p
    check_name(arg, "adapter name")  # before it becomes a path
    folder = adapters_dir / arg
    if not folder.is_dir():
        raise UserError(f"no adapter {repo_relative(folder)} (train it: python finetune.py {arg}; or give the "
                        f"adapter folder's path)")
    return folder


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the checkpoints holding a loadable adapter, oldest first."""
    return [(checkpoint_step(d), d) for d in outputs.checkpoints(run_dir)
            if (d / ADAPTER_CONFIG).is_file() and check_weights(d) is None]


def pick_checkpoint(run_dir: Path, wanted: str) -> Path:
    """--checkpoint latest | checkpoint-N | N."""
    found = checkpoints(run_dir)
    if not found:
        raise UserError(f"--checkpoint {wanted}: {repo_relative(run_dir)} has no checkpoint-* folder with adapter weights")
    if wanted == "latest":
        return found[-1][1]
    m = CHECKPOINT.fullmatch(wanted) or re.fullmatch(r"(\d+)", wanted)
    step = int(m.group(1)) if m else None
    for s, d in found:
        if s == step:
            return d
    raise UserError(f"--checkpoint {wanted}: not found; have {', '.join(d.name for _, d in found)} (or use latest)")


def _unfinished(run: RunRecord, run_dir: Path, arg: str, prog: str) -> UserError:
    found = checkpoints(run_dir)
    if not found:
        return UserError(f"{arg}: training did not finish (run.json status: {run.status}) and saved no checkpoint; "
                         f"finish it (python finetune.py {run.name} resumes)")
    step, newest = found[-1]
    return UserError(f"{arg}: training did not finish (run.json status: {run.status}); the newest checkpoint is "
                     f"{newest.name} (step {step}): {prog} {arg} --checkpoint latest (or --checkpoint {newest.name})")


def _prompt(arg: str, run: RunRecord | None, prompt_format: str | None) -> tuple[str, str]:
    """(name, template): --prompt-format for an adapter without run.json, else what run.json recorded."""
    if prompt_format is not None:
        if prompt_format not in PROMPT_FORMATS:
            raise UserError(f"--prompt-format {prompt_format}: unknown (known: {', '.join(PROMPT_FORMATS)})")
        return prompt_format, PROMPT_FORMATS[prompt_format]
    if run is not None:
        fmt, template = run.prompt_format.name or RUN_JSON, run.prompt_format.template
        if "{context}" not in template:
            raise UserError(f"{arg}: run.json prompt_format.template has no {{context}} placeholder")
        return fmt, template
    raise UserError(f"{arg}: no run.json, so the training prompt is unknown; pass --prompt-format "
                    f"({', '.join(PROMPT_FORMATS)}), the format it was trained with")


def _base(arg: str, run: RunRecord | None, run_dir: Path, weights_dir: Path, base_model: str | None) -> tuple[str, str]:
    """(reference as written, local folder): --base-model, else run.json's, else adapter_config.json's."""
    if base_model is not None:
        base = resolve_base(base_model)
        base_ref = base_model
    elif run is not None:
        base_ref = run.base_model
        base = resolve_base(base_ref, adapter_dir=run_dir)
    else:
        config = read_json(weights_dir / ADAPTER_CONFIG, ADAPTER_CONFIG)
        base_ref = config.get("base_model_name_or_path") if isinstance(config, dict) else None
        if not base_ref:
            raise UserError(f"{arg}: no base model in {ADAPTER_CONFIG} (pass --base-model PATH)")
        base = resolve_base(base_ref)
    if base.path is None:
        raise UserError(f"{base.error}; nothing is downloaded")
    return base_ref, base.path


def resolve(arg: str, checkpoint: str | None = None, base_model: str | None = None,
            prompt_format: str | None = None, adapters_dir: Path = ADAPTERS_DIR, prog: str = "finlora merge") -> AdapterRef:
    """The adapter, its base and its training prompt, or one UserError line saying what to fix."""
    run_dir = adapter_folder(arg, adapters_dir)
    run = RunRecord.read(run_dir)  # UserError when malformed
    if checkpoint is not None:
        weights_dir = pick_checkpoint(run_dir, checkpoint)
    elif run is not None and run.status != "complete":
        raise _unfinished(run, run_dir, arg, prog)
    else:
        weights_dir = run_dir
    if not (weights_dir / ADAPTER_CONFIG).is_file():
        raise UserError(f"{arg}: no {ADAPTER_CONFIG} in {repo_relative(weights_dir)}: not an adapter folder")
    problem = check_weights(weights_dir)
    if problem:
        raise UserError(f"{repo_relative(weights_dir)}: {problem}")

    fmt, template = _prompt(arg, run, prompt_format)
    base_ref, base_path = _base(arg, run, run_dir, weights_dir, base_model)
    entry = run.entry if run is not None else {}
    quant = entry.get("quant_bits")
    name = run.name if run is not None and run.name.strip() else run_dir.name
    return AdapterRef(
        name=name, run_dir=run_dir, weights_dir=weights_dir,
        checkpoint=weights_dir.name if weights_dir != run_dir else None,
        run=run, run_sha256=sha256_file(run_dir / RUN_JSON) if run is not None else None,
        base_ref=base_ref, base_path=base_path, prompt_format=fmt, template=template,
        quant=quant if quant in (4, 8) else None,
        family=family_of(run.to_json() if run is not None else None, [name, run_dir.name]),
    )
