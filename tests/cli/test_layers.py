"""The command modules use shared pieces only (common, references), never each other; nothing below cli imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import persam

SRC = Path(persam.__file__).parent
SHARED = {"persam.cli.common", "persam.cli.references"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_command_modules_do_not_import_each_other() -> None:
    commands = {f"persam.cli.{p.stem}" for p in (SRC / "cli").glob("*.py")} - SHARED - {"persam.cli.__init__", "persam.cli.main"}
    for path in (SRC / "cli").glob("*.py"):
        if path.stem == "main":
            continue
        wrong = {name for name in imported_modules(path) if name in commands} - {f"persam.cli.{path.stem}"}
        assert not wrong, f"{path.name} imports command modules {sorted(wrong)}"


def test_layers_below_cli_do_not_import_it() -> None:
    for layer in ("io", "backends", "method", "session", "eval", "jobs"):
        for path in (SRC / layer).rglob("*.py"):
            wrong = {name for name in imported_modules(path) if name == "persam.cli" or name.startswith("persam.cli.")}
            assert not wrong, f"{path.relative_to(SRC)} imports {sorted(wrong)}"
