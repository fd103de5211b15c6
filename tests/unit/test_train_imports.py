"""The training recipe's modules import each other at the top only, and without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[2] / "train"


def own_imports(node: ast.AST) -> list[str]:
    """The ``train.*`` modules that an import statement names (``from train import x`` names ``train.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "train"]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "train":
        if node.module == "train":
            return [f"train.{a.name}" for a in node.names]
        return [node.module]
    return []


def module_name(path: Path) -> str:
    parts = path.relative_to(TRAIN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """Top-level imports between train's modules, and every own import made inside a function."""
    edges: dict[str, set[str]] = {}
    nested: list[str] = []
    for path in sorted(TRAIN.rglob("*.py")):
        tree = ast.parse(path.read_text())
        name = module_name(path)
        edges[name] = {m for stmt in tree.body for m in own_imports(stmt)}
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                nested += [f"{name}.{fn.name} imports {m}" for node in ast.walk(fn) for m in own_imports(node)]
    return edges, nested


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when there is none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_train_has_no_import_cycle_and_no_function_local_imports_of_its_own_modules() -> None:
    edges, nested = graph()
    assert "train.train" in edges and "train.checkpoint" in edges["train.train"]
    assert nested == []
    assert find_cycle(edges) == []


def test_the_cycle_finder_finds_a_cycle_and_the_scan_finds_nested_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("def f():\n    from train.export import run\n    import train.card\n")
    fn = tree.body[0]
    assert [m for node in ast.walk(fn) for m in own_imports(node)] == ["train.export", "train.card"]
