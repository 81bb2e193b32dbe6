"""Errors caused by the user's input (recipe, data, flags).

A ``UserError`` is shown as a short message naming the field or file and the fix, with exit code 2
and no traceback. Anything else is an internal bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong and where; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"


def missing_extra(package: str, extra: str) -> UserError:
    """The error for an optional dependency that is not installed."""
    return UserError(
        f"this feature needs the optional package '{package}', which is not installed",
        hint=f"pip install 'vlmforge[{extra}]'",
    )
