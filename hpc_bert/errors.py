"""One kind of user-facing error, and one way to show it.

Every bad input ends in a single line that names the problem and the fix, before any
expensive work starts. Code raises ``UserError``; entry points wrap ``main`` with
``exit_on_user_error`` so the user sees ``hpc_bert: error: ...`` and exit status 2. A command
with several bad inputs lists them all, one line each: checks ``gather`` their problems and
``raise_all`` raises them together as ``UserErrors``.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2
# The trainer stopped early (signal, allocation deadline) after saving: requeue to continue.
EXIT_REQUEUE = 75  # EX_TEMPFAIL

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid."""


class UserErrors(ConfigError):
    """Several problems of one command; each is shown on its own line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def problems_of(e: UserError) -> list[str]:
    return list(e.problems) if isinstance(e, UserErrors) else [str(e)]


T = TypeVar("T")


def gather(problems: list[str], check: Callable[[], T]) -> T | None:
    """Run ``check``; on a UserError add its problems to ``problems`` and return None, so that the
    next check still runs and the user sees every bad input at once."""
    try:
        return check()
    except UserError as e:
        problems.extend(problems_of(e))
        return None


def raise_all(problems: list[str]) -> None:
    """Raise the problems gathered, if any (one: a plain ConfigError)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise UserErrors(problems)


def exit_on_user_error(main: F) -> F:
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            for problem in problems_of(e):
                msg = " ".join(problem.split("\n"))
                print(f"hpc_bert: error: {msg}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapped  # type: ignore[return-value]
