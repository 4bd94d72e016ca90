"""benchmarks/gpu_pod_check.py, the parts that run without a GPU: variants, entries, parsing, the report.

    .venv/bin/python -m pytest tests/test_gpu_pod_check.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import gpu_pod_check as pod
from lora.registry import parse_entry


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
    metrics = pod.train_metrics(log)
    assert metrics["train_runtime"] == 12.5 and metrics["train_loss"] == 10.95
    assert pod.tokens_per_second(metrics, {"sequence_len": 512}) == 9.6 * 512
    assert pod.tokens_per_second(metrics, {"sequence_len": 512, "sample_packing": False}) is None
    assert pod.train_metrics("no metrics here") == {}


def test_nvidia_smi_lines():
    assert pod.parse_memory_line("0, 1234\n") == (0, 1234)
    assert pod.parse_memory_line("[N/A]") is None


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
    pod.write_report(report, tmp_path)
    md = (tmp_path / "gpu_pod_check.md").read_text()
    assert "| bf16 | ok | 40.0 | 9000.0 |  | 4096 | 3.5 | 1.14 | 9.1 |" in md
    assert "### nf4" in md and "RuntimeError: boom" in md and "Skipped: bf16_flash" in md
    assert (tmp_path / "gpu_pod_check.json").is_file()


def test_download_command_is_binary_only_for_the_gpu_machines_python():
    argv = pod.download_command(Path("wheels/gpu"))
    assert argv[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in argv and "--no-deps" in argv
    assert argv[argv.index("--python-version") + 1] == "3.12"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert platforms == ["manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64"]
    assert {"axolotl==0.19.0", "trl==1.9.0", "datasets==4.8.4", "peft==0.20.0", "bitsandbytes==0.50.2"} <= set(argv)


def test_tiny_llama_is_small_and_uses_the_vocabulary():
    torch = pytest.importorskip("torch")
    model = pod.tiny_llama(1000, seed=0)
    assert model.config.vocab_size == 1000 and model.config._attn_implementation == "sdpa"
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 1000)
