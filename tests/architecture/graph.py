"""The project's import graph, read from the source (ast; nothing is imported), and its layers.

    python -m tests.architecture.graph                              # the stage graph and module table of the doc
    python -m tests.architecture.graph --write docs/architecture.md # rewrite that block in the doc

A module's imports are split into top-level ones and those inside functions ("late"); imports under
`if TYPE_CHECKING:` are annotations only and left out. A module is heavy when its top-level imports reach a
heavy third-party library (torch, numpy, …), directly or through other modules of the project.
"""
from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("lora", "eval")

# Stages from the bottom up: a module may import its own stage and the ones below, never one above.
STAGES = (
    ("core", ("lora.core",), "shared: errors, files, jsonl, names, prompts, precision, run.json, GPUs, processes"),
    ("recipe", ("lora.recipe",), "registry entry -> Axolotl recipe: schema, defaults, profiles, render, sweeps"),
    ("estimate", ("lora.estimate",), "memory, time and cost of a recipe on a profile"),
    ("train", ("lora.train", "lora.axolotl_cpu_bf16"), "decide and run one launch: lock, pre-flight, child, outputs"),
    ("eval", ("eval",), "adapters and base on the benchmark: tasks, engine, runner, scoring, reports"),
    ("pod", ("lora.pod",), "many runs or a rented machine: queue, SkyPilot"),
    ("use", ("lora.use",), "trained adapters at work: infer, merge, demo"),
    ("cli", ("lora.cli", "lora.__main__", "lora"), "the finlora command: one module per verb, and FinLoRA's shims"),
)
ENTRY_POINTS = ("eval.__main__",)  # `python -m eval`: a shim onto the cli stage, outside the eval stage

HEAVY_THIRD_PARTY = {"torch", "numpy", "transformers", "peft", "matplotlib", "gradio", "axolotl", "sklearn",
                     "datasets", "deepspeed", "accelerate", "bitsandbytes", "safetensors", "scipy", "rouge_score",
                     "huggingface_hub", "bert_score", "tqdm"}


def modules(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def _targets(node, mod: str, mods: dict) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            pkg = mod.split(".") if mods[mod].name == "__init__.py" else mod.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    return [a.name for a in node.names]


def _owner(name: str, mods: dict) -> str | None:
    while name not in mods:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def imports(root: Path = REPO) -> dict[str, dict]:
    """module -> {"top": project modules, "late": [(project module, line)], "third": top-level third-party roots}"""
    mods = modules(root)
    graph = {}
    for mod, path in mods.items():
        info = {"top": set(), "late": [], "third": set()}

        def visit(node, in_function: bool, mod=mod, info=info) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, mod, mods):
                        owner = _owner(target, mods)
                        if owner is None:
                            if not in_function:
                                info["third"].add(target.split(".")[0])
                        elif owner != mod and in_function:
                            info["late"].append((owner, child.lineno))
                        elif owner != mod:
                            info["top"].add(owner)
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, inner)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
        graph[mod] = info
    return graph


def heavy(graph: dict) -> set[str]:
    found = {m for m, info in graph.items() if info["third"] & HEAVY_THIRD_PARTY}
    while True:
        more = {m for m, info in graph.items() if m not in found and info["top"] & found}
        if not more:
            return found
        found |= more


def stage_of(module: str) -> int | None:
    best = None
    for i, (_, prefixes, _) in enumerate(STAGES):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


def edges(graph: dict) -> set[tuple[str, str]]:
    return {(m, t) for m, info in graph.items() for t in info["top"] | {t for t, _ in info["late"]}}


def cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), top-level and late imports alike."""
    adj = {m: sorted({t for a, t in edges(graph) if a == m}) for m in graph}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], itertools.count()

    def strong(v):
        index[v] = low[v] = next(counter)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in adj:
        if v not in index:
            strong(v)
    return out


def stage_edges(graph: dict) -> list[tuple[str, str]]:
    """(stage, stage it imports), each once, in stage order; entry-point shims left out."""
    pairs = set()
    for a, b in edges(graph):
        if a in ENTRY_POINTS:
            continue
        sa, sb = stage_of(a), stage_of(b)
        if sa is not None and sb is not None and sa != sb:
            pairs.add((sa, sb))
    return [(STAGES[a][0], STAGES[b][0]) for a, b in sorted(pairs)]


BEGIN, END = "<!-- stage graph: begin (python -m tests.architecture.graph --write docs/architecture.md) -->", \
    "<!-- stage graph: end -->"
TABLE_BEGIN, TABLE_END = ("<!-- modules: begin (python -m tests.architecture.graph --write docs/architecture.md) -->",
                          "<!-- modules: end -->")


def summary(path: Path) -> str:
    """A module's docstring, first sentence of its first paragraph, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    for end in (". ", "; "):
        if end in first:
            first = first[: first.index(end) + 1].rstrip(";")
            break
    return first.replace("|", "\\|")


def module_table(root: Path = REPO) -> str:
    """Every module of lora/ and eval/, by stage, with what its docstring says it is."""
    mods = modules(root)
    lines = [TABLE_BEGIN]
    for i, (name, _, what) in enumerate(STAGES):
        lines += ["", f"**{name}** — {what}", "", "| module | what it is |", "|---|---|"]
        for mod, path in mods.items():
            if stage_of(mod) == i or (i == len(STAGES) - 1 and mod in ENTRY_POINTS):
                lines.append(f"| `{path.relative_to(root)}` | {summary(path)} |")
    lines += ["", TABLE_END]
    return "\n".join(lines)


def _where(dotted: str) -> str:
    path = dotted.replace(".", "/")
    return path + "/" if (REPO / path).is_dir() else path + ".py"


def diagram(graph: dict) -> str:
    """The mermaid block docs/architecture.md shows: stages as boxes (top = depends on more), imports as arrows."""
    lines = [BEGIN, "```mermaid", "flowchart BT"]
    for name, prefixes, what in STAGES:
        lines.append(f'    {name}["<b>{name}</b> {" ".join(_where(p) for p in prefixes if p != "lora")}<br/>{what}"]')
    for a, b in stage_edges(graph):
        lines.append(f"    {a} --> {b}")
    lines += ["```", END]
    return "\n".join(lines)


def _replace(text: str, begin: str, end: str, block: str) -> str:
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + block + text[stop:]


def write_doc(doc: Path, graph: dict) -> None:
    text = _replace(doc.read_text(encoding="utf-8"), BEGIN, END, diagram(graph))
    doc.write_text(_replace(text, TABLE_BEGIN, TABLE_END, module_table()), encoding="utf-8")


if __name__ == "__main__":
    g = imports()
    if sys.argv[1:2] == ["--write"]:
        write_doc(Path(sys.argv[2]), g)
    else:
        print(diagram(g))
        print(module_table())
