"""Shared test helpers: a throwaway registry beside tmp data, the repo paths, and the one fake child."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FPB_TRAIN = REPO / "data" / "train" / "fpb_train.jsonl"
BUNDLED = REPO / "models" / "base_model" / "smollm2-135m-instruct"


def cpu_entry(**overrides) -> dict:
    entry = {
        "defaults": "tuned",  # like the shipped CPU entries; FinLoRA-shaped entries are tested without it
        "base_model": str(BUNDLED),
        "dataset_path": str(FPB_TRAIN),
        "lora_r": 4,
        "learning_rate": 0.0005,
        "batch_size": 1,
        "max_steps": 2,
        "sequence_len": 128,
        "profile": "cpu",
        "prompt_format": "chatml",
        "logging_steps": 1,
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def workspace(tmp_path):
    """A registry file plus recipes/ and lora_adapters/ folders, all under tmp_path."""

    class Workspace:
        root = tmp_path
        registry = tmp_path / "configs.json"
        recipes = tmp_path / "recipes"
        adapters = tmp_path / "adapters"

        def write(self, entries: dict | str) -> Path:
            text = entries if isinstance(entries, str) else json.dumps(entries, indent=1)
            self.registry.write_text(text)
            return self.registry

        def argv(self, *args: str) -> list[str]:
            return [*args, "--config-json", str(self.registry), "--recipes-dir", str(self.recipes),
                    "--adapters-dir", str(self.adapters)]

        def written(self) -> list[Path]:
            return sorted(p for d in (self.recipes, self.adapters) if d.exists() for p in d.rglob("*"))

    return Workspace()


def fake_machine(count: int, **overrides):
    """The pre-flight's facts of a healthy pod with `count` A5000s (20 GiB free each), model cached."""
    from lora.recipe.profiles import GpuInfo
    from lora.train.preflight import MachineFacts

    facts = dict(torch_version="2.11.0+cu128", torch_cuda="12.8", driver_cuda="12.8", cuda_available=count > 0,
                 gpus=tuple(GpuInfo(name="NVIDIA RTX A5000", total_gib=23.6, free_gib=20.0) for _ in range(count)),
                 free_disk_gb={"/cache": 500.0}, model_cached=True, token_present=False)
    return MachineFacts(**{**facts, **overrides})


@pytest.fixture
def fake_child(monkeypatch):
    """Patch the machine the pre-flight reads and the training child; record what would have run (argv, env, cwd).

    Set `.result` (a ChildResult) and `.gpus` (CUDA GPUs "found") before calling the CLI.
    """
    from lora.core.process import ChildResult
    from lora.train import launch as launch_plan

    class FakeChild:
        calls: list[dict] = []
        result = ChildResult(0, None)
        gpus = 4

    fake = FakeChild()
    fake.calls = []

    def run_child(argv, env, cwd, on_start=None):
        fake.calls.append({"argv": argv, "env": env, "cwd": cwd})
        return fake.result

    monkeypatch.setattr(launch_plan, "gather", lambda **_: fake_machine(fake.gpus))
    monkeypatch.setattr(launch_plan, "run_child", run_child)
    return fake
