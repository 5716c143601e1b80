"""No import circles among medtransfer's modules (issue #21 point 1).

Every ``import`` of a medtransfer module, at the top of a file or inside a function (a
lazy import is an arrow all the same), must point down the layers: cli -> tune ->
serve / inspect / study -> training -> config -> data / models -> options. The test reads
the source with ``ast`` (nothing is imported) and fails on any set of modules that
import each other, directly or round a longer loop, naming the loop.
"""

import ast
from pathlib import Path

import medtransfer

PACKAGE = Path(medtransfer.__file__).parent

# Known circles being removed elsewhere; each entry must still be a circle (so that the
# list only shrinks).
KNOWN_CIRCLES: list[set[str]] = []


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the medtransfer modules it imports, anywhere in its source."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 \
                        else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    # `from package import module` imports the module, not the package.
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        graph[name] = {target for target in targets if target in modules} - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_top_level_lazy_and_relative_imports():
    graph = import_graph()
    assert "medtransfer.errors" in graph["medtransfer.config"]  # at the top
    assert "medtransfer.models.registry" in graph["medtransfer.config"]  # in a function
    assert "medtransfer.models.applications" in graph["medtransfer.models"]  # from pkg import mod


def test_circles_are_found_round_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [{"a", "b", "c"}]


def test_no_import_circles():
    found = circles(import_graph())
    for known in KNOWN_CIRCLES:
        assert known in found, f"{sorted(known)} is no longer a circle: drop it from the list"
    new = [sorted(circle) for circle in found if circle not in KNOWN_CIRCLES]
    assert not new, (
        f"Import circles: {new}. Every import must point down the layers; move what both "
        "sides need into a module below both."
    )
