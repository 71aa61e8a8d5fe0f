"""The project's shape, checked on every `make test`: rooms by job, readable in one sitting.

- No import cycle among the project's own modules. Imports inside functions and under
  `if TYPE_CHECKING:` count: a lazy import hides a cycle from Python, not from a reader.
- The engine never imports an adapter; the LLM runtime (engine/runtime/) never imports the
  assistant's modules; an adapter never imports torch, transformers, chromadb or llama_cpp.
- No module over 400 lines, no function over 60, and one statement (and one assignment target)
  a line, so that a size is never met by squeezing. Tests, benchmarks and tools are exempt from
  the sizes, not from the cycles.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "adapters", "tests", "bench", "tools")
SIZE_EXEMPT = ("tests", "bench", "tools")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The runtime may use the shared basics (config, errors) but none of the assistant's logic.
RUNTIME_MAY_IMPORT = ("engine.runtime", "engine.config", "engine.errors")
HEAVY_LIBRARIES = ("torch", "transformers", "chromadb", "llama_cpp", "sentence_transformers")


def project_modules() -> dict[str, Path]:
    found = {"bot": ROOT / "bot.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            found[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file can reach, resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def own_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a `from package import name` counts as the module)."""
    found = set()
    for target in imported_names(name, path):
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: own_imports(name, path, set(modules)) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = len(index)
        low[node] = index[node]
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def sized_modules() -> dict[str, Path]:
    return {n: p for n, p in project_modules().items() if not n.startswith(SIZE_EXEMPT)}


def packed_lines(tree: ast.AST) -> list[int]:
    """Lines holding two statements, or one assignment to three or more of self's attributes."""
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for first, second in zip(body, body[1:]):
                if isinstance(first, ast.stmt) and isinstance(second, ast.stmt) and first.end_lineno == second.lineno:
                    lines.add(second.lineno)
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
                and isinstance(node.value, ast.Tuple) and len(node.targets[0].elts) >= 3
                and all(isinstance(t, ast.Attribute) for t in node.targets[0].elts)):
            lines.add(node.lineno)
    return sorted(lines)


def test_the_checks_see_a_cycle_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert packed_lines(ast.parse("x = 1; y = 2\nself.a, self.b, self.c = 1, 2, 3\na, b = f()\n")) == [1, 2]


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.core import Engine\n"
                    "def f():\n    from engine.runtime import backends\n")
    # Importing a module of a package runs the package's __init__ too: both count.
    assert own_imports("engine.x", path, {"engine.core", "engine.runtime", "engine.runtime.backends"}) == {
        "engine.core", "engine.runtime", "engine.runtime.backends"}


def test_no_import_cycle_among_the_projects_modules():
    assert strongly_connected(import_graph()) == []


@pytest.mark.parametrize("room, may_import", [
    ("engine", ("engine",)),
    ("engine.runtime", RUNTIME_MAY_IMPORT),
])
def test_each_room_imports_only_what_it_may(room, may_import):
    wrong = {f"{name} imports {target}" for name, targets in import_graph().items()
             if name == room or name.startswith(room + ".")
             for target in targets if not target.startswith(may_import)}
    assert sorted(wrong) == []


def test_adapters_never_touch_the_model_or_the_vector_store():
    heavy = {f"{name} imports {target}" for name, path in project_modules().items() if name.startswith("adapters")
             for target in imported_names(name, path) if target.split(".")[0] in HEAVY_LIBRARIES}
    assert sorted(heavy) == []


def test_modules_and_functions_stay_readable_without_squeezing():
    problems = []
    for name, path in sized_modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            problems.append(f"{name}: {len(text.splitlines())} lines")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{name}.{node.name}: {length} lines")
        problems.extend(f"{name}:{line}: packed" for line in packed_lines(tree))
    assert problems == []
