"""Which exceptions a user can fix: ``persam.errors.PersamError`` and its subclasses, nothing else.

Kept for the front ends that import ``user_errors``; any other exception is a bug (see ``persam.errors``).
"""

from __future__ import annotations

from persam.errors import PersamError


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types a front end reports as "the user can fix this": ``(PersamError,)``."""
    return (PersamError,)
