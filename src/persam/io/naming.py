"""The one output-naming rule: every batch (``persam segment``, ``persam video`` folders, the web app's
zip, DreamBooth's data folder) names its outputs with ``output_stems``.

A photo found in a folder keeps its path relative to that folder, a photo given as a file its name,
without the extension (``cats/a/01.jpg`` given as ``cats`` -> ``a/01``). When several photos would get
the same name (case ignored):

1. each of them is named after its path relative to the common folder of the colliding photos, when that
   is longer than its name so far (a name only ever grows: ``cat/01.jpg`` and ``dog/01.jpg`` given as
   files -> ``cat/01``, ``dog/01``; ``dog/01.jpg`` and ``dog/01.png`` found in one folder stay ``dog/01``);
2. photos still colliding add their extension (``dog/01.jpg``, ``dog/01.png`` -> ``dog/01_jpg``,
   ``dog/01_png``);
3. a name still taken gets ``_2``, ``_3``... in input order.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePath


def _key(stem: PurePath) -> str:
    return stem.as_posix().casefold()


def _collisions(stems: list[Path], members: Sequence[int]) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i in members:
        groups[_key(stems[i])].append(i)
    return [same for same in groups.values() if len(same) > 1]


def output_stems(targets: Sequence[tuple[str | os.PathLike, str | os.PathLike]]) -> list[Path]:
    """Unique output names (relative paths without extension) for ``(photo, stem)`` pairs.

    Args:
        targets: each photo once, with its name so far (as ``persam.io.find_images`` gives them). The photo
            is a path whose folders may lengthen a colliding name: pass an upload's own name (relative),
            not where the server stored it.
    Returns:
        One name per target, in input order, distinct when case is ignored.
    """
    stems = [Path(stem) for _, stem in targets]
    photos = [PurePath(photo) for photo, _ in targets]
    for group in _collisions(stems, range(len(stems))):
        paths = [Path(os.path.abspath(photos[i])) for i in group]
        try:
            common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        except ValueError:  # several drives
            continue
        for i, path in zip(group, paths):
            longer = path.relative_to(common).with_suffix("")
            if len(longer.parts) > len(stems[i].parts):
                stems[i] = longer
        for same in _collisions(stems, group):
            for i in same:
                suffix = photos[i].suffix.lower().lstrip(".")
                if suffix:
                    stems[i] = stems[i].with_name(f"{stems[i].name}_{suffix}")
    taken: set[str] = set()
    unique: list[Path] = []
    for stem in stems:
        name, n = stem, 2
        while _key(name) in taken:
            name, n = stem.with_name(f"{stem.name}_{n}"), n + 1
        taken.add(_key(name))
        unique.append(name)
    return unique
