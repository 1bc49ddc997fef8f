"""The layout's rules, checked on the code itself (docs/architecture.md says why each holds)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "monitors"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PRODUCT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str) -> Iterator[str]:
    """Every module imported at run time, at the top or inside a function; imports only for
    the type checker do not count."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level] if node.level else []
                base = ".".join([*package, base] if base else package)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        else:
            yield from _imports(node, module)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imports(tree, name) if target in modules and target != name}
        for name, tree in modules.items()
    }


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    path: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in seen:
            return None
        seen.add(node)
        path.append(node)
        for target in sorted(graph[node]):
            if found := visit(target):
                return found
        path.pop()
        return None

    return visit(start)


def test_no_import_cycle_anywhere_in_the_product():
    graph = _graph()
    cycles = [c for name in sorted(graph) if (c := _cycle_from(graph, name))]
    assert cycles == []


def test_the_product_never_imports_the_development_tools():
    offenders = {
        name
        for name, tree in _modules().items()
        for target in _imports(tree, name)
        if target.split(".")[0] in ("devtools", "tests", "bench")
    }
    assert offenders == set()


def test_no_function_in_the_product_is_longer_than_80_lines():
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1}"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_the_table_schema_is_spelled_only_in_the_store():
    outside = [
        f"{name}:{node.lineno}"
        for name, tree in _modules().items()
        if not name.startswith("monitors.store")
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in ("PartitionKey", "RowKey")
    ]
    assert outside == []


def test_every_table_query_passes_its_values_as_parameters():
    """A value pasted into an OData filter is an injection waiting for a quote; the SDK's
    ``parameters=`` escapes it."""
    unsafe = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "query_entities"
            ):
                continue
            query = node.args[0] if node.args else None
            literal = isinstance(query, ast.Constant) and "'" not in str(query.value)
            if not literal and not any(k.arg == "parameters" for k in node.keywords):
                unsafe.append(f"{name}:{node.lineno}")
            if isinstance(query, ast.JoinedStr):
                unsafe.append(f"{name}:{node.lineno} (f-string filter)")
            if isinstance(query, ast.Constant) and "'" in str(query.value):
                unsafe.append(f"{name}:{node.lineno} (quoted value in the filter)")
    assert unsafe == []
