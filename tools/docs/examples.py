"""Run every shell and Python block of README.md and docs/**/*.md against the tiny test model.

A documented command that no longer works (a renamed flag, a changed return type)
fails this run. Each page runs its blocks in order in a fresh folder of its own,
so a later block may use what an earlier one wrote.

Substitutions, so that the examples run offline in seconds:

=====================================  ==============================================
in the docs                            run as
=====================================  ==============================================
``--model`` any SAM / MobileSAM /      ``--model sam_tiny --random-weights``
LiteMedSAM name, or no ``--model``     (the tiny random-weight SAM of the tests)
``--model sam2.1_hiera_*``             ``--model sam2_tiny --random-weights``
``--checkpoint FILE``                  dropped (random weights instead)
``persam.load(NAME, checkpoint=...)``  ``persam.load("sam_tiny" or "sam2_tiny",
                                       random_weights=True, device="cpu")``
the photos and files of the examples   generated in the page's folder (``SANDBOX``
                                       below): ``dog.jpg``, ``photos/``, ``clip.mp4``...
=====================================  ==============================================

A block that cannot run here (it needs a GPU, a cluster, a download, a server
that never returns, the whole test suite) is marked by an HTML comment on the
line before its fence: ``<!-- not run: REASON -->``. Marked blocks are counted
apart, and every ``persam`` command in them is still parsed by the command
line's own parser, so a renamed flag fails there too.

Usage: ``python tools/docs/examples.py [FILES...]`` (default: README.md, CONTRIBUTING.md, docs/); exit 1
when a block fails. Python blocks and ``persam`` commands run in this process;
``persam`` through ``persam.cli.main.main``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = {"bash": "shell", "sh": "shell", "console": "shell", "shell": "shell", "python": "python", "py": "python"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.+?)\s*-->")
SAM2_PREFIX = "sam2"
TINY = {"sam": "sam_tiny", "sam2": "sam2_tiny"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page.

    Attributes:
        path: the page.
        line: 1-based line of the opening fence.
        kind: "shell" or "python".
        code: the block's text, dedented to its fence.
        not_run: the reason of a ``<!-- not run: ... -->`` marker, or None (the block runs).
    """

    path: Path
    line: int
    kind: str
    code: str
    not_run: str | None

    @property
    def where(self) -> str:
        """``page:line`` for messages."""
        try:
            return f"{self.path.relative_to(ROOT)}:{self.line}"
        except ValueError:
            return f"{self.path}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The shell and Python blocks of one Markdown page, in page order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"].lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if lang in LANGUAGES:
            previous = lines[start - 1] if start > 0 else ""
            marker = NOT_RUN.search(previous)
            found.append(Block(path, start + 1, LANGUAGES[lang], "\n".join(body), marker["reason"] if marker else None))
    return found


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block as word lists: continuations joined, comments and ``$`` prompts dropped."""
    text = re.sub(r"\\\n", " ", code)
    commands = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def command_parser(words: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that parses ``persam WORDS...``: the deepest subcommand named by the leading words."""
    from persam.cli.main import build_parser

    parser = build_parser()
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


def substitute(words: list[str]) -> list[str]:
    """``persam`` arguments with the tiny model: the module docstring's substitution table."""
    options = {s for a in command_parser(words)._actions for s in a.option_strings}
    if "--random-weights" not in options:  # a command that loads no model (models, eval --pred, ...)
        return list(words)
    out, family, i = [], "sam", 0
    while i < len(words):
        word = words[i]
        name, _, value = word.partition("=")
        if name in ("--model", "--checkpoint"):
            if not value and i + 1 < len(words):
                value = words[i + 1]
                i += 1
            if name == "--model" and value.startswith(SAM2_PREFIX):
                family = "sam2"
        else:
            out.append(word)
        i += 1
    return [*out, "--model", TINY[family], "--random-weights"]


def check_parses(words: list[str]) -> str | None:
    """None when ``persam WORDS...`` parses, else argparse's message (nothing is run)."""
    from persam.cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(words)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip() or f"exit status {exc.code}"
    return None


def run_persam(words: list[str]) -> tuple[int, str]:
    """Run ``persam WORDS...`` (substituted) in this process; (exit status, its output)."""
    from persam.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(substitute(words))
    return status, out.getvalue()


@contextlib.contextmanager
def tiny_load() -> Iterator[None]:
    """``persam.load`` of any model name builds the tiny model of its family with random weights."""
    import torch

    import persam.session.photo as photo

    real = photo.load

    def load(name: str = "vit_t", checkpoint=None, **kwargs):
        torch.manual_seed(0)
        kwargs.update(random_weights=True, device="cpu")
        return real(TINY["sam2" if name.startswith(SAM2_PREFIX) else "sam"], None, **kwargs)

    photo.load = load
    try:
        yield
    finally:
        photo.load = real


def run_python(code: str) -> str:
    """Execute a Python block with ``persam.load`` substituted; its output."""
    out = io.StringIO()
    with tiny_load(), contextlib.redirect_stdout(out):
        exec(compile(code, "<docs block>", "exec"), {"__name__": "__docs__"})
    return out.getvalue()


@dataclass
class Tally:
    """What a run did: blocks executed (commands, Python), blocks not run and their commands parsed, failures."""

    executed: int = 0
    commands: int = 0
    python: int = 0
    not_run: int = 0
    parsed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: list[tuple[float, str]] = field(default_factory=list)

    def line(self) -> str:
        """The summary line ``.ci/run`` prints."""
        return (
            f"docs examples: {self.executed} blocks executed ({self.commands} persam commands, {self.python} Python "
            f"blocks); {self.not_run} blocks marked not run ({self.parsed} persam commands in them parsed); "
            f"{len(self.failures)} failed"
        )


def run_block(block: Block, tally: Tally) -> None:
    """Run (or, marked not run, parse) one block; a failure is appended to ``tally.failures``."""
    failures = tally.failures
    if block.kind == "python":
        if block.not_run:
            tally.not_run += 1
            return
        try:
            run_python(block.code)
        except Exception:
            failures.append(f"{block.where}: Python block failed\n{traceback.format_exc(limit=-3)}")
        tally.executed += 1
        tally.python += 1
        return
    commands = shell_commands(block.code)
    for words in commands:
        if words[0] != "persam":
            if not block.not_run:
                failures.append(f"{block.where}: `{shlex.join(words)}` is not a persam command; mark the block")
            continue
        if block.not_run:
            problem = check_parses(words[1:])
            tally.parsed += 1
            if problem:
                failures.append(f"{block.where}: `{shlex.join(words)}` does not parse:\n{problem}")
            continue
        status, output = run_persam(words[1:])
        tally.commands += 1
        if status != 0:
            failures.append(f"{block.where}: `{shlex.join(words)}` exited {status}\n{output[-3000:]}")
    if block.not_run:
        tally.not_run += 1
    else:
        tally.executed += 1


def make_sandbox(folder: Path) -> None:
    """The files the examples name, generated in ``folder`` (photos 640x480 with one red ellipse).

    ``dog.jpg`` / ``dog_mask.png`` (the ellipse inside box 200,100,440,330, centre 320,216), ``dog2.jpg`` /
    ``dog2_mask.png``, ``park.jpg``, ``photos/`` (three photos, one in a sub-folder), ``clip.mp4`` (4 frames
    320x240, two objects moving right), ``first.png`` (its first frame's label map), ``frames/`` (the same
    frames as JPEG files).
    """
    import numpy as np
    from PIL import Image

    from persam.jobs.synthetic import synthetic_clip_frame, tiled_photo

    def photo(name: str, seed: int, center=(0.45, 0.5)) -> None:
        image, mask = tiled_photo(480, 640, seed=seed, center=center)
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=95)
        Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"{name}_mask.png")

    (folder / "photos" / "garden").mkdir(parents=True)
    photo("dog", 0)
    photo("dog2", 1, center=(0.5, 0.4))
    for name, seed, center in (("park", 2, (0.4, 0.6)), ("photos/a", 3, (0.5, 0.5)), ("photos/b", 4, (0.6, 0.4))):
        photo(name, seed, center)
        (folder / f"{name}_mask.png").unlink()
    photo("photos/garden/c", 5, (0.45, 0.55))
    (folder / "photos/garden/c_mask.png").unlink()
    frames = [synthetic_clip_frame(320, 2, shift=4 * k, seed=0) for k in range(4)]
    (folder / "frames").mkdir()
    for k, (frame, _) in enumerate(frames):
        Image.fromarray(frame).save(folder / "frames" / f"{k:05d}.jpg", quality=95)
    Image.fromarray(frames[0][1]).save(folder / "first.png")
    _write_clip(folder / "clip.mp4", [f for f, _ in frames])


def _write_clip(path: Path, frames: list) -> None:
    """(H, W, 3) uint8 frames as an MPEG-4 clip (PyAV, ``persam[video]``)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def pages(paths: list[Path]) -> list[Path]:
    """Markdown files: the given files, and every ``*.md`` under given folders, sorted."""
    found = []
    for path in paths:
        found.extend(sorted(path.rglob("*.md")) if path.is_dir() else [path])
    return found


def run_pages(paths: list[Path]) -> Tally:
    """Run every block of the pages, each page in a fresh generated folder."""
    tally = Tally()
    here = Path.cwd()
    for page in pages(paths):
        blocks = blocks_of(page)
        if not blocks:
            continue
        with tempfile.TemporaryDirectory(prefix="persam-docs-") as tmp:
            make_sandbox(Path(tmp))
            home = os.environ.get("PERSAM_HOME")
            os.environ["PERSAM_HOME"] = str(Path(tmp) / ".persam-home")  # caches (conversions) stay in the folder
            os.chdir(tmp)
            try:
                for block in blocks:
                    start = time.monotonic()
                    run_block(block, tally)
                    tally.seconds.append((time.monotonic() - start, block.where))
            finally:
                os.chdir(here)
                if home is None:
                    os.environ.pop("PERSAM_HOME", None)
                else:
                    os.environ["PERSAM_HOME"] = home
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="*", type=Path, help="Markdown files or folders (default: README.md CONTRIBUTING.md docs/)"
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    tally = run_pages(args.paths or [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "docs"])
    for failure in tally.failures:
        print(f"FAILED {failure}\n", file=sys.stderr)
    slowest = ", ".join(f"{where} {seconds:.0f} s" for seconds, where in sorted(tally.seconds, reverse=True)[:3])
    print(f"{tally.line()} in {time.monotonic() - start:.0f} s (slowest: {slowest})")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
