"""Optional packages and shared data in tests: a skip outside CI, a failure in CI.

``.ci/run`` sets ``CI=true`` and installs every extra (``pip install -e ".[dev,app]"``), so there a missing
package is a broken environment, never a reason to skip: :func:`require` fails the module (a collection
error) instead of skipping it. Outside CI a developer without an extra sees the tests skipped, as with
``pytest.importorskip``. :func:`require_path` does the same for the shared PerSeg sample photos, and
:func:`needs` is the marker form for one test or one parameter.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["IN_CI", "installed", "needs", "require", "require_path"]

#: Whether this run is CI's (``.ci/run`` exports ``CI=true``).
IN_CI = os.environ.get("CI", "").strip().lower() == "true"


def installed(name: str) -> bool:
    """Whether the module ``name`` (dotted names allowed) can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def require(name: str) -> ModuleType:
    """Import and return the module ``name``; missing: a failure under ``CI=true``, else a skip.

    Call it at module level (the whole file then fails to collect in CI) or inside a test.
    """
    if not IN_CI:
        return pytest.importorskip(name)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"CI=true: {name!r} is required in CI (.ci/run installs every extra) but: {exc}", pytrace=False)


def needs(name: str) -> pytest.MarkDecorator:
    """A marker that skips a test where ``name`` is missing, except in CI, where the test runs (and fails)."""
    return pytest.mark.skipif(not IN_CI and not installed(name), reason=f"{name} is not installed")


def require_path(path: Path, what: str = "shared data") -> Path:
    """``path`` if it exists; missing: a failure under ``CI=true``, else a skip (set PERSAM_SAMPLE_DIR)."""
    if Path(path).exists():
        return Path(path)
    message = f"{what} not present: {path}"
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
