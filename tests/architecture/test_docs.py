"""docs/architecture.md shows the stage graph the code has (regenerate: python -m tests.architecture.graph --write
docs/architecture.md), and every module path it names exists."""
from __future__ import annotations

import re

from tests.architecture.graph import REPO, diagram, imports, module_table

DOC = REPO / "docs" / "architecture.md"


def test_the_stage_graph_in_the_doc_is_the_code_s():
    text = DOC.read_text(encoding="utf-8")
    expected = diagram(imports())
    assert expected in text, "docs/architecture.md is stale: python -m tests.architecture.graph --write docs/architecture.md"


def test_the_module_table_in_the_doc_is_the_code_s():
    """Every module of lora/ and eval/ is listed under its stage with its docstring's first sentence."""
    assert module_table() in DOC.read_text(encoding="utf-8"), \
        "docs/architecture.md is stale: python -m tests.architecture.graph --write docs/architecture.md"


def test_every_path_the_doc_names_exists():
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:lora|eval|tests|templates|benchmarks)/[\w/.]*)(?:::(\w+))?`", text))
    assert len(named) > 20, "the doc names few paths: the check would pass on anything"
    assert sorted(p for p, _ in named if not (REPO / p).exists()) == []
    missing = sorted(f"{p}::{name}" for p, name in named if name and (REPO / p).is_file()
                     and not re.search(rf"^(def|class) {name}\b|^{name} = ", (REPO / p).read_text(encoding="utf-8"), re.M))
    assert missing == [], "the doc names functions its files do not define"
