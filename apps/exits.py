"""How every `deghost` application ends: its exit codes, and the one way it reports a usage error."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and something failed: some inputs (edit, listed), the scoring (eval), a check (zoo)
EXIT_USAGE = 2  # usage or configuration error: a bad option, no engines, a missing extra


def usage_error(command: str, message: str) -> int:
    """Print `deghost <command>: error: <message>` to stderr → EXIT_USAGE."""
    print(f"deghost {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE
