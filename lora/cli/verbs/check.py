"""finlora check NAME: pre-flight this machine for an entry — driver, GPUs, memory, bitsandbytes, attention, disk,
model, token, output folder; exit 2 on a failure. Every GPU launch runs it first.

    finlora check sentiment_llama_3_1_8b_8bits_r8 --profile auto     # on a pod (docs/pods.md)
"""
from __future__ import annotations

from argparse import Namespace

from lora.cli.options import add_machine, add_name, add_registry, launch_inputs
from lora.recipe.profiles import PROFILES
from lora.train.launch import preflight
from lora.train.preflight import require


def register(p) -> None:
    add_name(p)
    add_registry(p)
    add_machine(p)


def run(args: Namespace) -> int:
    registry, request, entry = launch_inputs(args)
    findings, _, _ = preflight(registry, request, entry)
    print(f"pre-flight of {request.name} on profile {entry.profile} ({PROFILES[entry.profile].description}):")
    for finding in findings:
        print(finding.line())
    require(findings)
    return 0
