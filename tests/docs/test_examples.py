"""The documentation's example runner (``tools/docs/examples.py``) and generated pages (``tools/docs/hooks.py``)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from extras import require

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "tools" / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


examples = _load("examples")


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


GOOD = "```bash\npersam mask dog.jpg --box 200,100,440,330 -o dog_mask.png\n```\n"


def test_a_wrong_flag_fails_the_run(tmp_path: Path) -> None:
    good = examples.run_pages([_page(tmp_path, GOOD)])
    assert good.failures == [] and good.executed == 1 and good.commands == 1
    wrong = GOOD.replace("--box", "--bbox")
    tally = examples.run_pages([_page(tmp_path, wrong)])
    assert tally.executed == 1 and len(tally.failures) == 1
    assert "page.md:1" in tally.failures[0] and "--bbox" in tally.failures[0]
    assert examples.main([str(tmp_path / "page.md")]) == 1


def test_a_marked_block_is_parsed_but_not_run(tmp_path: Path) -> None:
    text = (
        "<!-- not run: needs a GPU -->\n```bash\npip install x\npersam app --port 7861\n```\n\n"
        "<!-- not run: needs a GPU -->\n```bash\npersam app --prot 7861\n```\n"
    )
    tally = examples.run_pages([_page(tmp_path, text)])
    assert tally.executed == 0 and tally.not_run == 2 and tally.parsed == 2
    assert len(tally.failures) == 1 and "page.md:8" in tally.failures[0] and "--prot" in tally.failures[0]


def test_an_unmarked_block_that_is_not_persam_fails(tmp_path: Path) -> None:
    tally = examples.run_pages([_page(tmp_path, "```bash\nrm -rf photos\n```\n")])
    assert len(tally.failures) == 1 and "mark the block" in tally.failures[0]


def test_python_blocks_run_with_the_tiny_model(tmp_path: Path) -> None:
    code = 'import persam\nm = persam.load("vit_h", checkpoint="sam_vit_h.pth")\nassert m.backend.name == "sam_tiny"\n'
    tally = examples.run_pages([_page(tmp_path, f"```python\n{code}```\n")])
    assert tally.failures == [] and tally.python == 1
    broken = code.replace("persam.load", "persam.lod")
    tally = examples.run_pages([_page(tmp_path, f"```python\n{broken}```\n")])
    assert len(tally.failures) == 1 and "AttributeError" in tally.failures[0]


def test_substitution_table() -> None:
    sub = examples.substitute
    assert sub(["segment", "--model", "vit_h", "--checkpoint", "x.pth", "a/", "-o", "b/"]) == [
        "segment",
        *["a/", "-o", "b/", "--model", "sam_tiny", "--random-weights"],
    ]
    assert sub(["mask", "d.jpg", "--model=sam2.1_hiera_large", "-o", "m.png"]) == [
        *["mask", "d.jpg", "-o", "m.png"],
        *["--model", "sam2_tiny", "--random-weights"],
    ]
    assert sub(["models"]) == ["models"]  # loads no model: nothing added


def test_shell_commands_join_continuations_and_drop_comments() -> None:
    code = "# a comment\npersam segment --ref a.jpg \\\n    --ref-box 1,2,3,4 x/ -o y/   # trailing\n$ persam models\n"
    assert examples.shell_commands(code) == [
        ["persam", "segment", "--ref", "a.jpg", "--ref-box", "1,2,3,4", "x/", "-o", "y/"],
        ["persam", "models"],
    ]


def test_reliability_page_names_tests_that_exist() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(named) >= 30
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file() or not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M)
    ]
    assert not missing, missing


def test_cli_reference_has_every_command() -> None:
    require("mkdocs")
    from persam.cli.main import build_parser

    hooks = _load("hooks")
    page = hooks.cli_reference()
    commands = [name for name, _ in hooks._subcommands(build_parser())]
    assert {"segment", "index", "video", "eval", "bench", "models"} <= set(commands)
    for name in commands:
        assert f"## persam {name}\n" in page
    assert "## persam eval perseg\n" in page and "## persam dreambooth train\n" in page
    assert "--ref-box X0,Y0,X1,Y1" in page


def test_performance_page_shows_only_results_with_command_and_machine(tmp_path: Path, monkeypatch) -> None:
    require("mkdocs")
    hooks = _load("hooks")
    kept = {"command": "persam bench --model sam_tiny", "machine": {"cpu": "Test CPU"}, "encoder_s": 0.5}
    kept.update(decoder_pass_s=0.01, persam_extra_s=0.04, persam_extra_over_decoder=4.0)
    (tmp_path / "a.json").write_text(json.dumps(kept))
    (tmp_path / "b.json").write_text(json.dumps({"encoder_s": 9.87654}))  # no command, no machine
    monkeypatch.setattr(hooks, "RESULTS", tmp_path)
    page = hooks.performance_page()
    assert "persam bench --model sam_tiny" in page and "Test CPU" in page
    assert "| image encoder | 500.0 |" in page and "| PerSAM on an encoded photo | 40.0 | 4.00 |" in page
    assert "## b" not in page and "9876" not in page
