"""The one exception type for errors a user can fix (bad input, missing files, wrong shapes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


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


def from_dict(cls: type[T], data: Any, what: str) -> T:
    """Build the config dataclass `cls` from a JSON object; a non-object or unknown keys are TLDErrors.

    `what` names the config in messages ("DenoiserConfig keys", "sampling settings", ...).
    """
    if not isinstance(data, dict):
        raise TLDError(f"{what} must be a JSON object, got {type(data).__name__}")
    check_keys(
        data, (f.name for f in fields(cls)), f"unknown {what} {{unknown}}; expected a subset of {{known}}"
    )
    return cls(**data)
