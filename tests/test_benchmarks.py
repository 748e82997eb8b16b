"""The benchmark scripts import only names disalign still has.

They run for minutes, so CI does not run them; their imports sit inside functions, so a renamed
function would otherwise surface only when someone runs `make bench`.
"""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("bench_*.py"))


def _disalign_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "disalign":
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_every_benchmark_is_checked():
    assert len(BENCHMARKS) >= 8


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_a_benchmark_imports_names_that_exist(path):
    missing = [
        f"{module}.{name}"
        for module, name in _disalign_imports(path)
        if not hasattr(importlib.import_module(module), name) and importlib.util.find_spec(f"{module}.{name}") is None
    ]
    assert missing == []
