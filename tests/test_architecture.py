"""The package's shape: no import cycles, no module importing another's private names, and
no function-local import of the package's own modules without a reason written beside it."""
import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "symbuilder")


def _modules() -> Dict[str, str]:
    """Dotted module name -> file path, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
            out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].endswith("__init__.py")
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> List[Tuple[str, str, bool, int, str]]:
    """(imported module, imported name or '', at top level?, line, comment on that line)."""
    path = MODULES[module]
    with open(path) as f:
        source = f.read()
    lines = source.splitlines()
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    for n in tree.body:  # `if TYPE_CHECKING:` and try/except blocks at top level count as top
        if isinstance(n, (ast.If, ast.Try)):
            top.update(id(c) for c in ast.walk(n))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    found.append((full, "", id(node) in top, node.lineno, lines[node.lineno - 1]))
                else:
                    found.append((target, alias.name, id(node) in top, node.lineno,
                                  lines[node.lineno - 1]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, "", id(node) in top, node.lineno, lines[node.lineno - 1]))
    return [f for f in found if f[0] == "symbuilder" or f[0].startswith("symbuilder.")]


def test_the_walker_sees_the_package():
    assert "symbuilder.cli" in MODULES and "symbuilder.onnx.registry" in MODULES
    assert any(target == "symbuilder.errors" for target, *_ in _imports("symbuilder.cli"))


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for module in MODULES:
        for target, name, _, line, _ in _imports(module):
            if name.startswith("_") and not name.startswith("__") and target != module:
                offenders.append(f"{MODULES[module]}:{line}: {target}.{name}")
    assert offenders == []


def _graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _, _, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _is_ancestor_package(a: str, b: str) -> bool:
    return b.startswith(a + ".")


def test_no_import_cycles():
    """Every import, at top level or in a function, counts: a cycle hidden in a function is
    still a cycle for a reader. A package importing its own submodules (re-exports) and a
    submodule importing a sibling through the package are not edges of interest."""
    graph = {m: {t for t in ts if not _is_ancestor_package(m, t) and not _is_ancestor_package(t, m)}
             for m, ts in _graph().items()}
    cycles = []
    state: Dict[str, int] = {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_function_local_imports_of_the_package_say_why():
    """A function-local import hides an edge from readers and tools; keep one only where import
    time demands it, with the reason in a comment on the import line."""
    offenders = []
    for module in MODULES:
        for target, _, at_top, line, text in _imports(module):
            if not at_top and "#" not in text:
                offenders.append(f"{MODULES[module]}:{line}: {text.strip()}")
    assert offenders == []


MAX_FUNCTION_LINES = 60
# "module:function" -> why it is longer than MAX_FUNCTION_LINES. Empty: every function is
# short; a new entry needs a reason a reader accepts, not "it grew".
LONG_FUNCTIONS_ALLOWED: Dict[str, str] = {}


def _long_functions(path: str, module: str, limit: int) -> List[Tuple[str, int, int]]:
    """(module:qualified name, first line, length) of every function or method of the file
    longer than `limit` lines (ast: end_lineno - lineno + 1, nested functions included in
    their parent's length and measured themselves too)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = child.end_lineno - child.lineno + 1
                    if length > limit:
                        found.append((f"{module}:{name}", child.lineno, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_the_length_walker_measures_nested_functions_and_methods(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    a = 1\n    b = 2\n    def g():\n        c = 3\n        d = 4\n"
                    "        return c + d\n    return g\n\n\ndef short():\n    return 1\n\n\n"
                    "class C:\n    def h(self):\n        a = 1\n        b = 2\n        return a\n")
    assert _long_functions(str(path), "m", 3) == [("m:f", 1, 8), ("m:f.g", 4, 4), ("m:C.h", 16, 4)]


def test_no_function_is_longer_than_60_lines_without_a_reason():
    long = [(name, MODULES[name.split(":")[0]], line, length)
            for module, path in sorted(MODULES.items())
            for name, line, length in _long_functions(path, module, MAX_FUNCTION_LINES)]
    offenders = [f"{path}:{line}: {name} is {length} lines (limit {MAX_FUNCTION_LINES}): "
                 "split it into named steps, or allowlist it with a reason"
                 for name, path, line, length in long if name not in LONG_FUNCTIONS_ALLOWED]
    assert not offenders, "\n".join(offenders)
    stale = sorted(set(LONG_FUNCTIONS_ALLOWED) - {name for name, *_ in long})
    assert not stale, f"allowlisted but no longer long (drop the entries): {stale}"
    assert all(reason.strip() for reason in LONG_FUNCTIONS_ALLOWED.values())
