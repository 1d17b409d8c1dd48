"""The layering in docs/ARCHITECTURE.md, checked: imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "garrison"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules_under(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_fhir_layer_never_imports_the_web_or_cli() -> None:
    for path in modules_under("fhir"):
        bad = {m for m in imports_of(path) if m.startswith(("garrison.web", "garrison.cli"))}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_web_layer_does_not_touch_tables() -> None:
    for path in modules_under("web"):
        bad = {m for m in imports_of(path) if m.startswith("garrison.db.schema") or m == "sqlalchemy.sql"}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_db_layer_imports_nothing_above_it() -> None:
    for path in modules_under("db"):
        bad = {m for m in imports_of(path) if m.startswith(("garrison.fhir", "garrison.web", "garrison.cli"))}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_no_module_is_too_long() -> None:
    for path in SRC.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 800, f"{path.relative_to(SRC)} has {lines} lines; split it by concept"
