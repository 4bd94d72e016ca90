"""lora/core/precision.py: choose() with faked CPU facts, the facts gatherer with faked torch/cpuinfo, and how
finetune.py renders and launches each precision (child process faked: conftest's fake_child).

    .venv/bin/python -m pytest tests/core/test_precision.py -q
"""
from __future__ import annotations

import json
import types

import pytest
import yaml

from lora.cli.shims import finetune_main
from lora.core import precision
from lora.core.errors import UserError
from lora.core.precision import CpuFacts, choose, cpu_bf16_blocker, flags_from_cpuinfo
from lora.recipe.registry import load_registry
from lora.recipe.render import recipe_inputs, render
from lora.train import launch as launch_plan
from tests.conftest import cpu_entry

HAS = CpuFacts(True, "avx512_bf16 (faked)")
LACKS = CpuFacts(False, "neither (faked)")


@pytest.mark.parametrize("requested,facts,blocker,used", [
    ("auto", HAS, None, "bf16"),
    ("auto", LACKS, None, "fp32"),
    ("auto", HAS, "zero_stage 2 (DeepSpeed) on the CPU trains in fp32 only", "fp32"),
    ("fp32", HAS, None, "fp32"),
    ("fp32", LACKS, "anything", "fp32"),
    ("bf16", HAS, None, "bf16"),
])
def test_choose(requested, facts, blocker, used):
    chosen = choose(requested, facts, blocker)
    assert chosen.name == used and chosen.requested == requested
    assert chosen.record() == {"used": used, "requested": requested, "why": chosen.why} and chosen.why
    if blocker and requested == "auto":
        assert blocker in chosen.why


@pytest.mark.parametrize("facts,blocker,needle", [
    (LACKS, None, "no bf16 matmul instructions"),
    (HAS, "a 4-bit base on the CPU trains in fp32 only", "4-bit base"),
])
def test_bf16_where_it_cannot_run_is_refused(facts, blocker, needle):
    with pytest.raises(UserError, match=needle) as exc:
        choose("bf16", facts, blocker)
    assert "--precision fp32" in str(exc.value) and exc.value.exit_code == 2


def test_unknown_request_is_refused():
    with pytest.raises(UserError, match="choose one of auto, fp32, bf16"):
        choose("fp16", HAS)


def test_blockers():
    assert cpu_bf16_blocker(16, None) is None
    assert "DeepSpeed" in cpu_bf16_blocker(16, 2)
    assert "8-bit" in cpu_bf16_blocker(8, None) and "4-bit" in cpu_bf16_blocker(4, None)


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx512f {extra}\n\nprocessor\t: 1\nflags\t\t: fpu amx_bf16\n"


def test_flags_from_cpuinfo_reads_the_first_flags_line():
    assert flags_from_cpuinfo(CPUINFO.format(extra="avx512_bf16 amx_tile")) == {"avx512_bf16"}
    assert flags_from_cpuinfo(CPUINFO.format(extra="avx512_vnni")) == set()
    assert flags_from_cpuinfo("no flags here") == set()


def _fake_torch_cpu(monkeypatch, **checks):
    import torch

    monkeypatch.setattr(torch, "cpu", types.SimpleNamespace(**checks))


def test_cpu_facts_trusts_torchs_checks(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra="avx512_bf16"))  # ignored: torch answers
    _fake_torch_cpu(monkeypatch, _is_amx_tile_supported=lambda: False, _is_avx512_bf16_supported=lambda: False)
    assert precision.cpu_facts(info) == CpuFacts(False, "torch.cpu reports neither AMX nor AVX512-BF16")
    _fake_torch_cpu(monkeypatch, _is_amx_tile_supported=lambda: True, _is_avx512_bf16_supported=lambda: True)
    facts = precision.cpu_facts(info)
    assert facts.bf16_matmul and "amx" in facts.evidence and "avx512_bf16" in facts.evidence


def test_cpu_facts_falls_back_to_cpuinfo_when_torch_has_no_checks(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    _fake_torch_cpu(monkeypatch)
    info.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert precision.cpu_facts(info) == CpuFacts(True, f"avx512_bf16 ({info})")
    info.write_text(CPUINFO.format(extra=""))
    assert not precision.cpu_facts(info).bf16_matmul
    assert not precision.cpu_facts(tmp_path / "absent").bf16_matmul


def test_cpu_facts_survives_a_check_that_raises(monkeypatch, tmp_path):
    def broken():
        raise RuntimeError("no cpuinfo library")

    _fake_torch_cpu(monkeypatch, _is_amx_tile_supported=broken, _is_avx512_bf16_supported=lambda: True)
    assert precision.cpu_facts(tmp_path / "absent").bf16_matmul


# ---------------------------------------------------------------- rendering: recipes never depend on the machine


def test_auto_renders_fp32_keys_and_the_same_text_on_any_machine(workspace, monkeypatch):
    reg = load_registry(workspace.write({"run": cpu_entry()}))
    texts = set()
    for facts in (HAS, LACKS):
        monkeypatch.setattr(precision, "cpu_facts", lambda f=facts: f)
        texts.add(render(recipe_inputs(reg, "run")))
    (text,) = texts
    cfg = yaml.safe_load(text)
    assert cfg["bf16"] is False and cfg["plugins"] == ["lora.axolotl_cpu_bf16.CpuBf16"]
    assert "# Precision: auto, resolved at launch" in text and "--mixed_precision no" in text


def test_named_precision_is_rendered_with_its_flag(workspace):
    reg = load_registry(workspace.write({"run": cpu_entry()}))
    text = render(recipe_inputs(reg, "run", precision="bf16"))
    assert yaml.safe_load(text)["bf16"] is True and "# Precision: bf16 (--precision bf16)" in text
    assert "python finetune.py run --config-json" in text and "--precision bf16 --dry-run" in text
    assert "--mixed_precision bf16" in text
    fp32 = render(recipe_inputs(reg, "run", precision="fp32"))
    assert yaml.safe_load(fp32)["bf16"] is False and "# Precision: fp32 (--precision fp32)" in fp32


def test_an_entry_that_rules_bf16_out_renders_fp32_and_says_why(workspace):
    reg = load_registry(workspace.write({"q4": cpu_entry(quant_bits=4)}))
    text = render(recipe_inputs(reg, "q4"))
    assert yaml.safe_load(text)["bf16"] is False and "# Precision: fp32 (a 4-bit base on the CPU" in text


def test_gpu_recipes_keep_their_profiles_precision(workspace):
    reg = load_registry(workspace.write({"pod": cpu_entry(profile="a5000x4", base_model="meta-llama/Llama-3.1-8B")}))
    text = render(recipe_inputs(reg, "pod"))
    assert yaml.safe_load(text)["bf16"] is True and "plugins" not in yaml.safe_load(text)
    assert "# Precision:" not in text


# ---------------------------------------------------------------- launching: auto resolved on the training machine


@pytest.fixture
def launched(fake_child):
    return fake_child


def _launch(workspace, monkeypatch, facts, *flags, entry=None):
    monkeypatch.setattr(launch_plan, "cpu_facts", lambda: facts)
    workspace.write({"cpu": entry or cpu_entry()})
    return finetune_main(workspace.argv("cpu", *flags))


def test_auto_on_a_bf16_cpu_launches_bf16_and_records_it(workspace, launched, monkeypatch, capsys):
    _launch(workspace, monkeypatch, HAS)  # the faked child leaves no adapter: exit 1
    argv = launched.calls[0]["argv"]
    assert argv[argv.index("--mixed_precision") + 1] == "bf16" and argv[-2:] == ["--bf16", "True"]
    recipe = (workspace.recipes / "cpu.yaml").read_text()
    assert yaml.safe_load(recipe)["bf16"] is False  # the recipe stays the machine-independent one
    run = json.loads((workspace.adapters / "cpu" / "run.json").read_text())
    assert run["precision"]["used"] == "bf16" and run["precision"]["requested"] == "auto"
    assert run["command"] == argv and "precision: bf16" in capsys.readouterr().err


def test_auto_on_a_cpu_without_bf16_launches_fp32(workspace, launched, monkeypatch):
    _launch(workspace, monkeypatch, LACKS)  # the faked child leaves no adapter: exit 1
    argv = launched.calls[0]["argv"]
    assert argv[argv.index("--mixed_precision") + 1] == "no" and "--bf16" not in argv
    run = json.loads((workspace.adapters / "cpu" / "run.json").read_text())
    assert run["precision"]["used"] == "fp32"


def test_named_bf16_is_in_the_recipe_not_the_argv(workspace, launched, monkeypatch):
    _launch(workspace, monkeypatch, HAS, "--precision", "bf16")  # the faked child leaves no adapter: exit 1
    argv = launched.calls[0]["argv"]
    assert "--bf16" not in argv and argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert yaml.safe_load((workspace.recipes / "cpu.yaml").read_text())["bf16"] is True


@pytest.mark.parametrize("facts,entry,needle", [
    (LACKS, None, "no bf16 matmul instructions"),
    (HAS, cpu_entry(quant_bits=4), "4-bit base"),
])
def test_bf16_that_cannot_run_is_one_line_and_writes_nothing(workspace, launched, monkeypatch, capsys, facts, entry,
                                                             needle):
    assert _launch(workspace, monkeypatch, facts, "--precision", "bf16", entry=entry) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "--precision bf16" in err
    assert launched.calls == [] and workspace.written() == []


def test_precision_on_a_gpu_entry_is_refused(workspace, launched, capsys):
    workspace.write({"pod": cpu_entry(profile="a5000x4", base_model="meta-llama/Llama-3.1-8B")})
    assert finetune_main(workspace.argv("pod", "--precision", "fp32", "--dry-run")) == 2
    assert "--precision is for cpu entries" in capsys.readouterr().err
