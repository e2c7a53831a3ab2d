"""The one exception type the CLI turns into a clear message: what went wrong and what to do."""


class StrataError(Exception):
    """A user-facing failure; the message names the problem and the fix."""
