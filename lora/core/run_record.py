"""run.json: the contract between training (lora/) and evaluation (eval/), defined once.

    python finetune.py sentiment_smollm2_cpu        # writes lora_adapters/sentiment_smollm2_cpu/run.json
    python -m eval lora_adapters/                   # reads it back through RunRecord.read

Written when a launch starts (status "running") and rewritten when it ends ("complete", "failed",
"interrupted"), atomically both times. Only a "complete" run with adapter weights is a finished adapter.
Paths are portable: repo-relative when inside the repository, else relative to the adapter folder
(`portable_path`); no machine path is stored. Schema 1 (absolute dataset paths) is still read.
`compute` (lora/core/compute.py: the training child's peak RSS / GPU memory, mean CPU / GPU use, wall time per
phase) is optional: a run.json written before it existed reads as compute None.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lora.core.compute import ComputeRecord
from lora.core.errors import UserError
from lora.core.files import REPO_ROOT, read_json, write_json_atomic

RUN_JSON = "run.json"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
Status = Literal["running", "complete", "failed", "interrupted"]


class PromptFormatRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    template: str = Field(description="the prompt wrapped around each row's context; holds one {context}")


class DatasetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str


class PrecisionRecord(BaseModel):
    """The precision training ran in (lora/core/precision.py): used is fp32 or bf16; requested is --precision."""

    model_config = ConfigDict(extra="forbid")

    used: Literal["fp32", "bf16"]
    requested: Literal["auto", "fp32", "bf16"]
    why: str


class GitRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commit: str | None = None
    dirty: bool | None = None


class RunRecord(BaseModel):
    """One training run's facts. `entry` is the registry entry as the user wrote it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: int = Field(default=SCHEMA_VERSION, alias="schema")
    name: str
    status: Status
    base_model: str = Field(description="hub id, or a portable path to the base model folder")
    prompt_format: PromptFormatRecord
    profile: str | None = None
    entry: dict = Field(default_factory=dict)
    recipe_path: str | None = None
    recipe: str | None = None
    command: list[str] = Field(default_factory=list)
    resumed_from: str | None = None
    datasets: list[DatasetRecord] = Field(default_factory=list)
    versions: dict[str, str | None] = Field(default_factory=dict)
    git: GitRecord = Field(default_factory=GitRecord)
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    global_step: int | None = None
    final_train_loss: float | None = None
    compute: ComputeRecord | None = Field(default=None, description="what training used (lora/core/compute.py)")
    tensorboard_dir: str | None = Field(default=None, description="TensorBoard event files (portable path)")
    precision: PrecisionRecord | None = None  # absent in runs made before --precision

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def write(self, output_dir: Path) -> None:
        write_json_atomic(output_dir / RUN_JSON, self.to_json())

    @classmethod
    def parse(cls, obj: object, source: str = RUN_JSON) -> "RunRecord":
        """Validate a loaded run.json; UserError (one line) for a wrong shape or an unknown schema."""
        if not isinstance(obj, dict):
            raise UserError(f"{source}: not a JSON object")
        version = obj.get("schema")
        if version not in READABLE_SCHEMAS:
            raise UserError(f"{source}: run.json schema {version!r} is not one this code reads "
                            f"({', '.join(map(str, READABLE_SCHEMAS))}); update finlora-axolotl or retrain")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise UserError(f"{source}: key {loc!r}: {err['msg']}") from None

    @classmethod
    def read(cls, output_dir: Path) -> "RunRecord | None":
        """The folder's run.json, None when there is none; UserError when it is unreadable or malformed."""
        path = output_dir / RUN_JSON
        if not path.is_file():
            return None
        obj = read_json(path, "run.json")
        return cls.parse(obj, str(path))


def portable_path(path: Path | str, output_dir: Path, root: Path = REPO_ROOT) -> str:
    """Repo-relative when inside the repository; otherwise relative to the adapter folder."""
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(p, output_dir.resolve())).as_posix()


def resolve_portable(ref: str, output_dir: Path, root: Path = REPO_ROOT) -> Path:
    """Inverse of portable_path: an absolute path (schema 1) as is, else the repo, else the adapter folder."""
    p = Path(ref)
    if p.is_absolute():
        return p
    in_repo = root / p
    return in_repo if in_repo.exists() else (output_dir / p).resolve()
