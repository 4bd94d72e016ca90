"""What a run leaves beside its adapter: run.json (lora/core/run_record.py) and loss.png (the curves).

    python finetune.py sentiment_smollm2_cpu     # lora_adapters/sentiment_smollm2_cpu/{run.json,loss.png}

run.json is written when the launch starts (status "running") and rewritten when it ends
("complete", "failed" or "interrupted"), atomically both times. Only a "complete" run with adapter
weights is a finished adapter; the eval package refuses anything else.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from lora.core.files import REPO_ROOT, adapter_weights, library_versions, sha256_file, utc_now_iso
from lora.core.run_record import DatasetRecord, GitRecord, PromptFormatRecord, RunRecord, portable_path

LOSS_PNG = "loss.png"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # the Trainer's checkpoint-<global step> folders
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "axolotl", "datasets", "trl", "bitsandbytes", "deepspeed")
__all__ = ["adapter_weights", "start_record", "finish_record", "complete_checkpoints", "plot_loss"]


def git_commit(root: Path = REPO_ROOT) -> GitRecord:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return GitRecord(commit=commit, dirty=bool(status) if status is not None else None)


def start_record(*, name: str, entry: dict, recipe_path: str, recipe_text: str, prompt_format: dict,
                 base_model: str, datasets: list[Path], command: list[str], profile: str,
                 resumed_from: str | None, output_dir: Path) -> RunRecord:
    return RunRecord(
        name=name, status="running", base_model=base_model, prompt_format=PromptFormatRecord(**prompt_format),
        profile=profile, entry=entry, recipe_path=recipe_path, recipe=recipe_text, command=command,
        resumed_from=resumed_from,
        datasets=[DatasetRecord(path=portable_path(p, output_dir), sha256=sha256_file(p)) for p in datasets],
        versions=library_versions(LIBRARIES), git=git_commit(), started_at=utc_now_iso(),
    )


def finish_record(record: RunRecord, *, status: str, exit_code: int, output_dir: Path) -> RunRecord:
    update: dict = {"status": status, "exit_code": exit_code, "ended_at": utc_now_iso()}
    state = latest_trainer_state(output_dir)
    if state is not None:
        update["global_step"] = state.get("global_step")
        losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
        update["final_train_loss"] = losses[-1] if losses else None
    return record.model_copy(update=update)


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT.fullmatch(path.name).group(1))


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-<step> folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints a resume can trust: trainer state and adapter weights both written."""
    return [c for c in checkpoints(output_dir) if (c / "trainer_state.json").is_file() and adapter_weights(c)]


def latest_trainer_state(output_dir: Path) -> dict | None:
    for ckpt in reversed(complete_checkpoints(output_dir)):
        try:
            return json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def training_finished(output_dir: Path) -> bool:
    """True when the newest checkpoint reached the trainer's last step.

    axolotl answers SIGINT by saving the adapter and exiting 0, so a zero exit code and adapter
    weights alone do not prove the run finished; the trainer state does.
    """
    state = latest_trainer_state(output_dir)
    return bool(state) and state.get("global_step", 0) >= state.get("max_steps", float("inf"))


def loss_series(state: dict) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    for row in state.get("log_history", []):
        if "loss" in row and "step" in row:
            series["train"].append((row["step"], row["loss"]))
        if "eval_loss" in row and "step" in row:
            series["eval"].append((row["step"], row["eval_loss"]))
    return series


def plot_loss(output_dir: Path, title: str) -> Path | None:
    """Draw train (and eval) loss against step from the newest checkpoint's trainer state."""
    state = latest_trainer_state(output_dir)
    if state is None:
        return None
    series = loss_series(state)
    if not series["train"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if label == "eval" else None, markersize=3, label=f"{label} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target = output_dir / LOSS_PNG
    tmp = output_dir / f".{LOSS_PNG}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(target)
    return target
