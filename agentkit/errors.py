"""The exceptions the SDK raises on purpose.

`UserError` and its subclasses are the user's to fix (a config, a plugin, an input): the CLI prints their
message alone and exits with code 2. Anything else is a bug, printed with its traceback, exit code 1.
"""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input; the message names the culprit and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A run config that does not validate."""


class PluginError(UserError):
    """A plugin that cannot be loaded or registers something invalid."""


class InvalidInputError(UserError):
    """Bad data at run time: an observation of the wrong shape, a mask with nothing allowed, ..."""


class EmptyMaskError(InvalidInputError):
    """An action mask row with no allowed action. `rows` holds the offending batch indices."""

    def __init__(self, message: str, rows: list[int] | None = None):
        super().__init__(message)
        self.rows = rows or []


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated or tampered with."""


class NonFiniteError(InvalidInputError):
    """A NaN or infinity where training needs finite numbers: from the env, or in the losses or weights."""


class EnvTimeoutError(InvalidInputError):
    """An env step (or reset) that took longer than ``env.step_timeout`` seconds."""


class RunAborted(BaseException):
    """A second SIGTERM ended a training run at once (a second Ctrl-C raises KeyboardInterrupt instead). Not a
    ``UserError``: the CLI prints it and exits with ``exit_code``, 128 + the signal number."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"a second {signal.Signals(signum).name} ended the run at once")
        self.exit_code = 128 + signum


def script_exit_code(main: Callable[[], object], prog: str) -> int:
    """Run a script's ``main()`` as the CLI runs a command: a ``UserError`` (a bad ``--set``, a missing run
    dir) is printed as ``prog: error: message``, without a traceback, and gives its exit code; otherwise
    ``main``'s int result, or 0. For scripts outside the CLI (benchmarks/) that build configs from flags."""
    try:
        code = main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return code if isinstance(code, int) else 0
