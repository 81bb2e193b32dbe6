"""Errors caused by the user's input (recipe, data, flags).

A ``UserError`` is shown as a short message naming the field or file and the fix, with exit code 2
and no traceback. Anything else is an internal bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


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


class UserErrors(UserError):
    """Several problems found at once: ``vlmforge validate`` and each verb's pre-flight report every one,
    not only the first, so a user fixes a recipe in one round."""

    def __init__(self, problems: list[UserError]) -> None:
        super().__init__(f"{len(problems)} problems: " + "; ".join(p.message for p in problems))
        self.problems = problems


def collect(checks: Iterable[Callable[[], object]]) -> list[UserError]:
    """Run every check (each raises ``UserError`` on a problem); return the problems found."""
    problems = []
    for check in checks:
        try:
            check()
        except UserErrors as several:
            problems.extend(several.problems)
        except UserError as problem:
            problems.append(problem)
    return problems


def raise_all(problems: list[UserError]) -> None:
    """Raise nothing, the one problem, or all of them together."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise UserErrors(problems)
