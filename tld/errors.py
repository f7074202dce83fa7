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


def check_int(value: Any, what: str, minimum: int | None = None) -> int:
    """`value` when it is an integer (a bool is not one) and at least `minimum`, else a TLDError."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TLDError(f"{what} must be an integer{bound}, got {value!r}")
    return value


def check_number(
    value: Any, what: str, minimum: float | None = None, maximum: float | None = None
) -> float:
    """`value` when it is an int or float (not a bool) in [minimum, maximum], else a TLDError."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bound = f" in [{minimum:g}, {maximum:g}]"
        elif minimum is not None or maximum is not None:
            bound = f" >= {minimum:g}" if minimum is not None else f" <= {maximum:g}"
        else:
            bound = ""
        raise TLDError(f"{what} must be a number{bound}, got {value!r}")
    return value


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
