"""The cycle collector around a command: paused while the model loads, frozen when the script ends."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import persam
from persam.backends.imports import collector_paused
from persam.cli import main as cli_main
from persam.session.model_spec import ModelSpec

SRC = str(Path(persam.__file__).resolve().parents[1])


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if not was:
        gc.disable()


def test_collector_paused_restores_the_state_it_found(collector_on) -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "a collector the caller had disabled must stay disabled"
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled(), "an error in the block must not leave the collector off"


def test_the_model_loads_with_the_collector_paused(collector_on, monkeypatch) -> None:
    import persam.session.photo as photo

    seen = []
    monkeypatch.setattr(photo, "load", lambda *a, **k: seen.append(gc.isenabled()) or "model")
    assert ModelSpec("sam_tiny", random_weights=True).load() == "model"
    assert seen == [False]
    assert gc.isenabled()


def test_the_script_freezes_what_main_made_and_returns_its_status(collector_on, monkeypatch) -> None:
    gc.unfreeze()
    monkeypatch.setattr(cli_main, "main", lambda argv=None: 3)
    assert cli_main.script() == 3
    assert gc.get_freeze_count() > 0


def test_main_leaves_the_collector_alone(collector_on, capsys) -> None:
    gc.unfreeze()
    assert cli_main.main(["models"]) == 0
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_the_installed_script_and_python_m_persam_run_script() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "persam"]
    assert script.value == "persam.cli.main:script"
    text = (Path(SRC) / "persam" / "__main__.py").read_text()
    assert "sys.exit(script())" in text


def test_python_m_persam_exits_with_the_commands_status(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "PERSAM_HOME": str(tmp_path)}
    ok = subprocess.run([sys.executable, "-m", "persam", "models"], env=env, capture_output=True, timeout=120)
    bad = subprocess.run([sys.executable, "-m", "persam", "segment"], env=env, capture_output=True, timeout=120)
    assert (ok.returncode, bad.returncode) == (0, 2)
