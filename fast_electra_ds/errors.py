"""User-facing errors: one line naming the problem and the fix, no traceback."""


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
