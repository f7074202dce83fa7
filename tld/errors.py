"""The one exception type for errors a user can fix (bad input, missing files, wrong shapes)."""

from __future__ import annotations

from collections.abc import Iterable


class TLDError(ValueError):
    """A user-facing error: its message is one line that says what was expected and what came."""


def check_keys(given: Iterable[str], known: Iterable[str], message: str) -> None:
    """Raise a TLDError when `given` holds keys outside `known` (a config's unknown-key check).

    `message` is a format string with `{unknown}` and `{known}`, filled with both as sorted lists.
    """
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise TLDError(message.format(unknown=unknown, known=sorted(known)))
