"""The package's layers import in one direction only, and no module grows past 400 lines.

Layers, lowest first: ``errors`` (the exception classes every layer raises)
<- ``io`` (files) <- ``backends`` (tensors) <- ``method``
(the paper's steps, tensors) <- ``session`` (numpy/PIL API) <- ``jobs``
(files, progress) <- ``engine`` (the job spec, its checks, the one batch
runner) <- ``app``, ``labelstudio`` and ``cli`` (front ends, which never import ``method``). ``eval`` (metrics and
dataset layouts) sits on ``io`` only. Every import is checked, including the
ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "persam"

#: layer -> the layers it may import (itself included)
ALLOWED = {
    "errors": {"errors"},
    "io": {"errors", "io"},
    "backends": {"errors", "io", "backends"},
    "method": {"errors", "io", "backends", "method"},
    "session": {"errors", "io", "backends", "method", "session"},
    "eval": {"errors", "io", "eval"},
    "jobs": {"errors", "io", "backends", "method", "session", "eval", "jobs"},
    # the job engine and the front ends stay above the session: none imports the method's modules
    "engine": {"errors", "io", "backends", "session", "jobs", "engine"},
    "app": {"errors", "io", "backends", "session", "eval", "jobs", "engine", "app"},
    # Label Studio is one more front end on the engine
    "labelstudio": {"errors", "io", "backends", "session", "jobs", "engine", "labelstudio"},
    "cli": {"errors", "io", "backends", "session", "eval", "jobs", "engine", "app", "labelstudio", "cli"},
}
#: the package's own top-level modules: ``persam/__init__.py`` re-exports the session lazily
TOP = {"__init__": {"session"}, "__main__": {"cli"}}
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def persam_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every ``persam`` import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "persam"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "persam":
            # ``from a.b import c``: c may be a module (``from persam.cli import segment``)
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def target_layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_layer_is_known():
    assert {layer_of(p) for p in modules()} <= set(ALLOWED) | set(TOP)


def test_imports_run_down_the_layers():
    wrong = []
    for path in modules():
        layer = layer_of(path)
        allowed = ALLOWED.get(layer, TOP.get(layer, set()))
        for line, module in persam_imports(path):
            target = target_layer(module)
            if target is not None and target not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({layer}) imports {module} ({target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_commands_do_not_import_each_other():
    """A command module (one with ``add_parser``) is imported by ``cli/main.py`` only."""
    cli = PACKAGE / "cli"
    commands = {f"persam.cli.{p.stem}" for p in cli.glob("*.py") if "def add_parser(" in p.read_text()}
    wrong = [
        f"{p.name}:{line} imports {m}"
        for p in cli.glob("*.py")
        if p.name != "main.py"
        for line, m in persam_imports(p)
        for c in commands
        if (m == c or m.startswith(c + ".")) and c != f"persam.cli.{p.stem}"
    ]
    assert not wrong, "command modules used as libraries:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by idea"


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The walk finds imports inside functions and ``from persam import`` forms."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from persam.cli.common import warn\n    from persam import session\n")
    assert persam_imports(bad) == [(2, "persam.cli.common.warn"), (3, "persam.session")]
