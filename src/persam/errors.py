"""What a user can fix, as exception types: the library raises them, every front end renders them.

``PersamError`` and its subclasses mean "the input, the options or the environment the user gave cannot be
used, and here is how to fix it". Their message is one line, neutral (no command-line flags: the command
line adds those when it prints, from ``field``), and names the file concerned. Any other exception raised
inside persam is a bug: front ends show it as an internal error (a traceback, exit status 70; a batch lists
the photo as ``"failed"``), never as a one-line "fix your input".

Each class also derives from the built-in type that Python code would expect (``ValueError`` for a bad
value, ``FileNotFoundError`` for a missing file, ``OSError`` for an output that cannot be written), so
``except ValueError`` in a caller's code keeps working.

No imports beyond the standard library: every layer may raise these.
"""

from __future__ import annotations

import os

#: The exit status of a run stopped by what the user can fix (a ``PersamError``), as argparse's usage errors.
USAGE_ERROR = 2
#: The exit status of a run that hit a bug (any other exception), as ``EX_SOFTWARE`` of sysexits.h.
INTERNAL_ERROR = 70

__all__ = [
    "INTERNAL_ERROR",
    "USAGE_ERROR",
    "BusyError",
    "CheckpointError",
    "IncompatibleError",
    "InputError",
    "MissingExtraError",
    "MissingInputError",
    "OptionsError",
    "OutputError",
    "PersamError",
    "StoreError",
]


class PersamError(Exception):
    """Something the user can fix.

    Attributes:
        message: the one-line message (whitespace, newlines included, collapsed).
        path: the file or folder concerned, or None.
        field: the option concerned, as the job spec / keyword argument names it (``"finetune"``,
            ``"parts"``, ``"checkpoint"``), or None; the command line turns it into its flag. A tuple
            names several options (an error about a combination): ``field`` is then the first of them.
        fields: every option concerned (``()`` when none).
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike | None = None, field: str | tuple[str, ...] | None = None
    ) -> None:
        text = " ".join(str(message).split())
        super().__init__(text)
        self.message = text
        self.path = None if path is None else os.fspath(path)
        self.fields: tuple[str, ...] = (field,) if isinstance(field, str) else tuple(field or ())
        self.field = self.fields[0] if self.fields else None

    def __str__(self) -> str:
        return self.message

    def reworded(self, message: str) -> PersamError:
        """The same error (type, path, field) with another message, e.g. with the file's name in front."""
        return type(self)(message, path=self.path, field=self.fields)

    def __reduce__(self):  # picklable across processes (Ray) with its fields
        return (_rebuild, (type(self), self.message, self.path, self.fields))


def _rebuild(cls: type[PersamError], message: str, path: str | None, fields: tuple[str, ...]) -> PersamError:
    return cls(message, path=path, field=fields)


class InputError(PersamError, ValueError):
    """A file the user gave cannot be used: an unreadable or damaged photo, mask, video, zip or concept."""


class MissingInputError(PersamError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OptionsError(PersamError, ValueError):
    """Options that are invalid or contradict each other (``field`` names the first one concerned)."""


class IncompatibleError(PersamError, ValueError):
    """Things that do not fit together: a concept, index or checkpoint made with another model."""


class CheckpointError(PersamError, ValueError):
    """A checkpoint could not be found, downloaded, verified or read."""


class StoreError(InputError):
    """An album store (index file or folder) is damaged or not a persam store."""


class OutputError(PersamError, OSError):
    """An output cannot be written: a file in the way, no permission, a full disk."""


class MissingExtraError(PersamError, ImportError):
    """An optional package that the asked-for work needs is not installed (the message names the extra)."""


class BusyError(PersamError):
    """The output folder is being written by another persam run."""
