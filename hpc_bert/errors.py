"""One kind of user-facing error, and one way to show it.

Every bad input ends in a single line that names the problem and the fix, before any
expensive work starts. Code raises ``UserError``; entry points wrap ``main`` with
``exit_on_user_error`` so the user sees ``hpc_bert: error: ...`` and exit status 2.
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


def exit_on_user_error(main: F) -> F:
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            msg = " ".join(str(e).split("\n"))
            print(f"hpc_bert: error: {msg}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapped  # type: ignore[return-value]
