"""The import graph of webtune, read from the source (imports inside functions included): no cycles,
and a stage package imports only itself and the shared modules, never another stage."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = {"sources", "prepare", "mix", "train", "evaluate", "report", "deploy"}
# What every stage may use; each of these imports only the others (and never a stage).
SHARED = {"chat", "config", "errors", "console", "fileio", "paths", "records", "ledger", "rundir", "prose",
          "models", "base_model", "openai_client", "redaction", "grounding", "textsig", "vllm_server", "__init__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every webtune module this module's imports name (`from . import x` names module x when it is one)."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m == "webtune" or m.startswith("webtune.")}


def import_graph() -> nx.DiGraph:
    files = {module_name(p): p for p in (SRC / "webtune").rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for target in imported(ast.parse(path.read_text()), name, path.name == "__init__.py", set(files)):
            while target not in files:          # `import webtune.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target != name:
                graph.add_edge(name, target)
    return graph


def area(module: str) -> str:
    """The top-level package or module under webtune a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_graph_is_read():
    graph = import_graph()
    assert graph.has_edge("webtune.train.hf", "webtune.chat.tokenize")       # a function-level import
    assert graph.has_edge("webtune.commands", "webtune.hydra_setup")


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_stages_import_only_themselves_and_shared_modules():
    sideways = sorted(f"{a} -> {b}" for a, b in import_graph().edges
                      if area(a) in STAGES and area(b) != area(a) and area(b) not in SHARED)
    assert not sideways, "a stage imports another stage or an orchestration module: " + ", ".join(sideways)


def test_shared_modules_never_import_a_stage():
    upward = sorted(f"{a} -> {b}" for a, b in import_graph().edges
                    if area(a) in SHARED and area(b) not in SHARED)
    assert not upward, "a shared module imports a stage or an orchestration module: " + ", ".join(upward)


@pytest.mark.parametrize("kind", ["cycle", "sideways"])
def test_the_checks_catch_what_they_look_for(kind):
    graph = import_graph()
    if kind == "cycle":
        graph.add_edge("webtune.chat.tokenize", "webtune.train.hf")
        assert any(len(c) > 1 for c in nx.strongly_connected_components(graph))
    else:
        graph.add_edge("webtune.evaluate.judge", "webtune.train.hf")
        assert any(area(a) in STAGES and area(b) in STAGES and area(a) != area(b) for a, b in graph.edges)


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in (SRC / "webtune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                found += [f"{path.relative_to(SRC)}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names imported across modules: " + ", ".join(found)
