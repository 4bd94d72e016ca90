"""docs/architecture.md shows the stage graph the code has (regenerate: python -m tests.architecture.graph --write
docs/architecture.md), and every module path it names exists."""
from __future__ import annotations

import re

from tests.architecture.graph import REPO, diagram, imports

DOC = REPO / "docs" / "architecture.md"


def test_the_stage_graph_in_the_doc_is_the_code_s():
    text = DOC.read_text(encoding="utf-8")
    expected = diagram(imports())
    assert expected in text, "docs/architecture.md is stale: python -m tests.architecture.graph --write docs/architecture.md"


def test_every_path_the_doc_names_exists():
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:lora|eval|tests|templates|benchmarks)/[\w/.]*)`", text))
    assert named, "the doc names no paths: the check would pass on anything"
    assert sorted(p for p in named if not (REPO / p).exists()) == []
