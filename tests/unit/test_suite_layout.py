"""The test suite's own layout: shared code lives in ``tests/helpers``, test modules hold tests.

A test module importing another runs the other's module-level code and ties the two together.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TEST_MODULES = sorted(p for p in TESTS.rglob("test_*.py") if ".venv" not in p.parts)


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_test_module_imports_another_test_module_or_a_conftest():
    offenders = []
    for path in TEST_MODULES:
        for name in _imported_modules(ast.parse(path.read_text(), str(path))):
            last = name.rsplit(".", 1)[-1]
            if last.startswith("test_") or last == "conftest":
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert offenders == [], "move shared code to tests/helpers: " + "; ".join(offenders)


def test_every_test_module_defines_a_test():
    def is_test(node: ast.stmt) -> bool:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node.name.startswith("test_")
        if isinstance(node, ast.ClassDef):
            return node.name.startswith("Test")
        # a test case bound to a name, e.g. ``TestStore = StoreMachine.TestCase`` (hypothesis)
        return isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.startswith("Test") for t in node.targets
        )

    empty = [
        str(p.relative_to(TESTS))
        for p in TEST_MODULES
        if not any(map(is_test, ast.parse(p.read_text()).body))
    ]
    assert empty == [], "helpers belong in tests/helpers, not in a test_*.py: " + ", ".join(empty)


def test_helpers_hold_no_tests():
    helpers = sorted((TESTS / "helpers").glob("*.py"))
    assert helpers, "tests/helpers is missing"
    assert [p.name for p in helpers if p.name.startswith("test_")] == []
