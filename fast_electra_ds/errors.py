"""User-facing errors: one line naming the problem and the fix, no traceback."""
import sys


class UserError(Exception):
    """A mistake in the user's input (files, config, vocabularies). The CLI prints
    `error: <message>` on one line and exits with status 2."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = ""):
        message = problem if not fix else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))  # always one line


class PeerRankFailure(UserError):
    """Another rank of the job died (killed, out of memory, node lost): this rank cannot go on."""

    exit_code = 3


def run_guarded(function, argv: list[str]) -> int:
    """User mistakes become one line on stderr and exit status 2, not a traceback. (Here, not in
    cli.py: every entry point uses it, and train.py importing cli.py, which imports train.py, was a circle.)"""
    try:
        return function(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
