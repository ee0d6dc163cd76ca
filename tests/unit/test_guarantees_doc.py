"""docs/guarantees.md names a test for every claim: each named file and test must exist.

A claim whose test was renamed or deleted would silently lose its proof; this
keeps the "shown by" column honest.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from paystream.settings import REPO_ROOT

DOC = REPO_ROOT / "docs" / "guarantees.md"
# `tests/...py` or `tests/...py::test_name` (a parametrized id after "[" is ignored);
# `::test_name` alone continues the file named last in the same cell.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+)(?:\[[^\]]*\])?)?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def _references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for line in DOC.read_text().splitlines():
        current: str | None = None
        for match in REFERENCE.finditer(line):
            path, name = match.group(1), match.group(2)
            if path is None and name is None:
                continue
            current = path or current
            assert current is not None, f"`::{name}` with no file before it: {line}"
            found.append((current, name))
    return found


def test_every_test_the_guarantees_name_exists() -> None:
    references = _references()
    assert len(references) >= 40
    missing = []
    for path, name in references:
        file = REPO_ROOT / path
        if not file.exists():
            missing.append(path)
        elif name is not None and name not in _tests_in(file):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_table_row_names_a_test() -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    claims = [row for row in rows if not row.startswith("| claim") and not row.startswith("| point")]
    unproven = [
        row
        for row in claims
        if "`tests/" not in row and "`paystream " not in row and "`after_" not in row and "`in_" not in row
    ]
    assert unproven == []
