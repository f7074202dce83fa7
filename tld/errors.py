"""The one exception type for errors a user can fix (bad input, missing files, wrong shapes)."""


class TLDError(ValueError):
    """A user-facing error: its message is one line that says what was expected and what came."""
