"""The one error type users see: a message naming the cause and the fix, exit status 2."""


class AgentError(Exception):
    """A problem the user can act on; the CLI prints it on one line and exits 2."""

    exit_code = 2
