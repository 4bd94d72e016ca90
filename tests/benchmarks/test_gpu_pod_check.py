"""benchmarks/gpu_pod_check.py and its gpu_pod_* helpers, the parts that run without a GPU: variants, entries,
parsing, the report.

    .venv/bin/python -m pytest tests/benchmarks/test_gpu_pod_check.py -q
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_pod_check as pod
from benchmarks import gpu_pod_measure as pod_measure
from benchmarks import gpu_pod_model as pod_model
from benchmarks import gpu_pod_report as pod_report
from benchmarks import gpu_pod_wheels as pod_wheels
from lora.recipe.registry import parse_entry


def test_every_variant_is_a_valid_registry_entry_on_a_gpu_profile():
    entries = pod.registry_entries(Path("/models/tiny"), steps=30)
    assert len(entries) == len(pod.VARIANTS) == len({v.name for v in pod.VARIANTS})
    parsed = {name: parse_entry(name, e) for name, e in entries.items()}
    assert {e.quant_bits for e in parsed.values()} == {4, 8, 16}
    assert any(e.peft_use_dora for e in parsed.values()) and any(e.sample_packing is False for e in parsed.values())
    assert {e.attention for e in parsed.values()} == {"sdpa", "flash_attention_2"}
    assert all(e.max_steps == 30 and e.profile == "a5000x1" for e in parsed.values())
    assert parsed["gpu_check_bf16_zero2"].resolved.zero_stage == 2


def test_cpu_smoke_entries_use_the_cpu_profile():
    (entry,) = pod.registry_entries(Path("/m"), steps=2, variants=pod.VARIANTS[:1], cpu=True).values()
    assert parse_entry("x", entry).profile == "cpu"


def test_train_metrics_and_tokens_per_second():
    log = ("noise {'loss': 2.0}\n{'train_runtime': '12.5', 'train_samples_per_second': '9.6', "
           "'train_steps_per_second': '2.4', 'train_loss': '10.95', 'epoch': '0.1'}\n")
    metrics = pod_measure.train_metrics(log)
    assert metrics["train_runtime"] == 12.5 and metrics["train_loss"] == 10.95
    assert pod_measure.tokens_per_second(metrics, {"sequence_len": 512}) == 9.6 * 512
    assert pod_measure.tokens_per_second(metrics, {"sequence_len": 512, "sample_packing": False}) is None
    assert pod_measure.train_metrics("no metrics here") == {}


def test_nvidia_smi_lines():
    assert pod_measure.parse_memory_line("0, 1234\n") == (0, 1234)
    assert pod_measure.parse_memory_line("[N/A]") is None


def test_report_lists_results_and_every_failure(tmp_path):
    report = {
        "started": "now", "mode": "gpu", "command": "python benchmarks/gpu_pod_check.py", "model": "tiny",
        "environment": {"python": "3.12.3", "torch": "2.11.0+cu128", "gpus": ["NVIDIA H100 80GB HBM3, 81559 MiB"]},
        "install": {"status": "ok"}, "import_probe": {"ok": True},
        "results": [
            {"variant": "bf16", "status": "ok", "seconds": 40.0, "tokens_per_second": 9000.0, "peak_gpu_mib": 4096,
             "plan_peak_gib": 3.5, "train_loss": 9.1},
            {"variant": "nf4", "status": "failed", "error_tail": "RuntimeError: boom"},
            {"variant": "bf16_flash", "status": "skipped", "note": "flash_attn does not import here"},
        ],
        "eval": {"status": "ok", "seconds": 12.0, "results_md": "| model | fpb |"},
    }
    pod_report.write_report(report, tmp_path)
    md = (tmp_path / "gpu_pod_check.md").read_text()
    assert "| bf16 | ok | 40.0 | 9000.0 |  | 4096 | 3.5 | 1.14 | 9.1 |" in md
    assert "### nf4" in md and "RuntimeError: boom" in md and "Skipped: bf16_flash" in md
    assert "Eval, --merge-lora off: ok (12.0 s)" in md
    assert (tmp_path / "gpu_pod_check.json").is_file()


def test_download_command_is_binary_only_for_the_gpu_machines_python():
    argv = pod_wheels.download_command(Path("wheels/gpu"))
    assert argv[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in argv and "--no-deps" in argv
    assert argv[argv.index("--python-version") + 1] == "3.12"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert platforms == ["manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64"]
    assert {"axolotl==0.19.0", "trl==1.9.0", "datasets==4.8.4", "peft==0.20.0", "bitsandbytes==0.50.2"} <= set(argv)


def test_tiny_llama_is_small_and_uses_the_vocabulary():
    torch = pytest.importorskip("torch")
    model = pod_model.tiny_llama(1000, seed=0)
    assert model.config.vocab_size == 1000 and model.config._attn_implementation == "sdpa"
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 1000)


def test_a_variant_runs_only_while_it_leaves_the_eval_its_time():
    # 500 s left, 120 kept for the eval: a first run may take up to the cap
    assert pod.variant_timeout(500, 120, [], cap_s=300) == 300
    assert pod.variant_timeout(300, 120, [], cap_s=300) == 180
    # the slowest run so far took 100 s: the next needs 120 s of room
    assert pod.variant_timeout(239, 120, [40.0, 100.0], cap_s=300) is None
    assert pod.variant_timeout(241, 120, [40.0, 100.0], cap_s=300) == 121
    # never fewer than 60 s, however fast the earlier runs were
    assert pod.variant_timeout(170, 120, [5.0], cap_s=300) is None


def _predictions(folder: Path, model: str, outputs: list[str]) -> None:
    path = folder / "predictions" / model / "fpb.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "output": o}) + "\n" for i, o in enumerate(outputs)))


def test_merged_and_unmerged_answers_are_compared_row_by_row(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _predictions(a, "base", ["x", "y"])
    _predictions(a, "adapter", ["positive", "negative", "neutral"])
    _predictions(b, "adapter", ["positive", "neutral"])  # one row differs, one is missing
    _predictions(a, "only_in_a", ["z"])
    _predictions(b, "base", ["changed", "y"])  # the base is never compared
    assert pod_measure.compare_predictions(a, b) == {"rows": 2, "same_output": 1}


def test_generate_seconds_counts_the_adapters_only(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"compute": {"phases": [
        {"name": "base load m", "wall_seconds": 5.0}, {"name": "generate base × fpb", "wall_seconds": 2.0},
        {"name": "generate a1 × fpb", "wall_seconds": 1.25}, {"name": "generate a2 × fpb", "wall_seconds": 1.5}]}}))
    assert pod_measure.generate_seconds(results) == 2.75
    assert pod_measure.generate_seconds(tmp_path / "missing.json") is None


def test_a_report_written_before_training_says_the_eval_was_not_reached(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "bf16.log").write_text("".join(f"line {i}\n" for i in range(500)))
    report = {"started": "now", "mode": "gpu", "command": "c", "install": {"status": "ok"},
              "environment": {"python": "3.12.3", "gpus": []}, "import_probe": {"ok": True}}
    pod_report.write_report(report, tmp_path / "out", logs, log_lines=10)
    md = (tmp_path / "out" / "gpu_pod_check.md").read_text()
    assert "Eval: not reached" in md and "Model: (not built yet)" in md
    text = (tmp_path / "out" / "logs.txt").read_text()
    assert "===== bf16.log" in text and "line 499" in text and "line 489" not in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_pod_check.json", "gpu_pod_check.md",
                                                                     "logs.txt"]


def test_travel_size_counts_tracked_untracked_and_carried_but_not_ignored(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("wheels/\n")  # 8 bytes
    (tmp_path / "tracked.txt").write_bytes(b"a" * 100)
    git("add", ".")
    (tmp_path / "untracked.txt").write_bytes(b"b" * 10)
    (tmp_path / "wheels" / "gpu").mkdir(parents=True)
    (tmp_path / "wheels" / "gpu" / "x.whl").write_bytes(b"c" * 1000)
    (tmp_path / "wheels" / "other.whl").write_bytes(b"d" * 5000)  # ignored and not carried
    assert pod_wheels.travel_bytes(tmp_path, ("wheels/gpu",)) == 8 + 100 + 10 + 1000
    assert pod_wheels.travel_bytes(tmp_path, ()) == 118


def test_bitsandbytes_keeps_the_cpu_library_and_those_of_one_cuda_major():
    keep = [n for n in ("bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda128.so",
                        "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda132.so",
                        "bitsandbytes/libbitsandbytes_rocm72.so", "bitsandbytes/libbitsandbytes_xpu2025.so",
                        "bitsandbytes/functional.py", "bitsandbytes-0.50.2.dist-info/RECORD")
            if pod_wheels.keep_bnb_member(n, "13")]
    assert keep == ["bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so",
                    "bitsandbytes/libbitsandbytes_cuda132.so", "bitsandbytes/functional.py",
                    "bitsandbytes-0.50.2.dist-info/RECORD"]
    assert pod_wheels.keep_bnb_member("bitsandbytes/libbitsandbytes_cuda128.so", "12")


def test_a_slimmed_wheel_drops_members_and_their_record_lines(tmp_path):
    import zipfile

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pkg/big.so", b"\0" * 1000)
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,sha256=a,6\npkg/big.so,sha256=b,1000\n"
                                               "pkg-1.0.dist-info/RECORD,,\n")
    assert pod_wheels.slim_wheel(wheel, lambda name: not name.endswith(".so")) == 1
    with zipfile.ZipFile(wheel) as z:
        assert z.namelist() == ["pkg/__init__.py", "pkg-1.0.dist-info/RECORD"]
        assert z.read("pkg-1.0.dist-info/RECORD").decode() == ("pkg/__init__.py,sha256=a,6\n"
                                                               "pkg-1.0.dist-info/RECORD,,\n")
        assert z.read("pkg/__init__.py") == b"x = 1\n"
