"""The import graph of lora/ and eval/: no cycle, stages import only downward, project modules at the top.

    python -m pytest -q tests/architecture
"""
from __future__ import annotations

from tests.architecture.graph import ENTRY_POINTS, STAGES, cycles, edges, heavy, imports, modules, stage_of

GRAPH = imports()


def test_every_module_belongs_to_a_stage():
    assert [m for m in modules() if m not in ENTRY_POINTS and stage_of(m) is None] == []


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_stages_import_only_downward():
    upward = sorted(f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
                    for a, b in edges(GRAPH) if a not in ENTRY_POINTS and stage_of(b) > stage_of(a))
    assert upward == []


def test_project_modules_are_imported_at_the_top_unless_they_load_a_heavy_library():
    """A function-level import of our own code is only for a module that pulls in torch, numpy, … at import
    time (so `finlora --help` and the light verbs stay fast); every other one belongs at the top of the file."""
    heavy_modules = heavy(GRAPH)
    late_light = sorted(f"{m}:{line} imports {t}" for m, info in GRAPH.items() for t, line in info["late"]
                        if t not in heavy_modules)
    assert late_light == []


def test_the_graph_reader_sees_what_it_must():
    """The checks above are only as good as the reader: it finds known edges, late imports and heavy modules."""
    assert ("lora.train.launch", "lora.recipe.render") in edges(GRAPH)
    assert "eval.engine" in heavy(GRAPH) and "lora.core.errors" not in heavy(GRAPH)
    assert any(t == "eval.engine" for t, _ in GRAPH["lora.use.infer"]["late"])
    assert stage_of("lora.cli.verbs.train") == len(STAGES) - 1 and stage_of("lora.core.files") == 0
