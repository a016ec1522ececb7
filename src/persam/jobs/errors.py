"""The errors a user can fix (bad files, bad options): jobs skip or report them, the command line
prints them in one line with exit status 2."""

from __future__ import annotations

#: Errors a user can fix, without the checkpoint errors (which need a lazy import).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, PermissionError)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus ``persam.backends.checkpoints.CheckpointError`` (imported here, on first call)."""
    from persam.backends.checkpoints import CheckpointError

    return USER_ERRORS + (CheckpointError,)
