"""The argument checkers: one rule, one message, for every module of the package.

The lowest layer: it imports nothing from the package, so specs, hooks, the tree,
systemd, plot and the integrations can all use it. (The demo cannot: it is written as a
user's program would be, on the public API only; see tests/test_demo.py.) Modelled on
attrs' validators, every failure message has one shape, naming the owner, the field (or
option), the rule and the value::

    ChildSpec 'db': shutdown_timeout must be >= 0 or None (got -1)
    supervisor_tree: shutdown_deadline must be a number >= 0 (got True)

A value of the wrong type names the kind with the rule ("must be a number >= 0"); a value
of the right type out of range names the rule only ("must be >= 0"). The rule is always
stated whole, so a fix that follows the message is accepted.

The rules:

* A *number* is an ``int`` or a ``float``, never a ``bool`` (``True`` is not 1 second).
  NaN is refused by every number checker (it fails every comparison, so it is refused
  by the bounds; with no bound, ``finite=True`` refuses it). ``inf`` is refused only by
  ``finite=True``.
* An *int* is an ``int``, never a ``bool`` and never a float (``2.0`` is refused).
* A *bool* is ``True`` or ``False`` only: ``1``, ``0`` and ``None`` are refused, as an
  option that is a flag is a flag.
* An *async function* is something whose call returns an awaitable coroutine: an
  ``async def`` function or method, a ``functools.partial`` of one, or an object (not a
  class) whose ``__call__`` is ``async def``. A coroutine *object* (``worker()`` instead
  of ``worker``) is refused with its own message, and closed so that Python does not also
  warn that it was never awaited.

Every checker takes the exception class to raise (``error``), so that each caller keeps
the exception it documents (``SpecError`` for specs, ``ValueError`` elsewhere), and
optionally another class for a value of the wrong type (``type_error``, e.g. ``TypeError``).
"""

from __future__ import annotations

import inspect
import math
from typing import Literal, TypeGuard, overload

__all__ = [
    "async_function",
    "boolean",
    "describe",
    "integer",
    "is_async_callable",
    "is_int",
    "is_number",
    "number",
]

ErrorClass = type[Exception]


def is_number(value: object) -> TypeGuard[float]:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(
    error: ErrorClass, owner: str | None, field: str, rule: str, value: object, hint: str
) -> Exception:
    where = f"{owner}: {field}" if owner else field
    return error(f"{where} must be {rule} (got {value!r}){hint}")


def _bounds(at_least: float | None, above: float | None, at_most: float | None) -> str:
    low = (
        f">= {at_least!r}" if at_least is not None else f"> {above!r}" if above is not None else ""
    )
    if at_most is None:
        return low
    if at_least is None or above is not None:
        raise ValueError("an upper bound goes with at_least only")  # pragma: no cover
    return f"within [{at_least!r}, {at_most!r}]"


def _rule(bounds: str, *, finite: bool, none: bool) -> tuple[str, str]:
    """(the rule for a value of the wrong type, the rule for a value out of range)."""
    tail = " or None" if none else ""
    kind = "a finite number" if finite else "a number"
    typed = f"{kind} {bounds}{tail}" if bounds else f"{kind}{tail}"
    if bounds:
        ranged = f"{bounds} and finite{tail}" if finite else f"{bounds}{tail}"
    else:
        ranged = f"finite{tail}" if finite else typed
    return typed, ranged


def _in_range(
    value: float, at_least: float | None, above: float | None, at_most: float | None
) -> bool:
    if at_least is not None and not value >= at_least:
        return False
    if above is not None and not value > above:
        return False
    return at_most is None or value <= at_most


@overload
def number(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: float | None = ...,
    above: float | None = ...,
    at_most: float | None = ...,
    finite: bool = ...,
    none: Literal[False] = ...,
    error: ErrorClass = ...,
    type_error: ErrorClass | None = ...,
    hint: str = ...,
) -> float: ...
@overload
def number(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: float | None = ...,
    above: float | None = ...,
    at_most: float | None = ...,
    finite: bool = ...,
    none: Literal[True],
    error: ErrorClass = ...,
    type_error: ErrorClass | None = ...,
    hint: str = ...,
) -> float | None: ...
def number(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    finite: bool = False,
    none: bool = False,
    error: ErrorClass = ValueError,
    type_error: ErrorClass | None = None,
    hint: str = "",
) -> float | None:
    """Check that ``value`` is a number (int or float, not bool) within the bounds.

    Args:
      owner: what the value belongs to, e.g. ``"ChildSpec 'db'"``; None for a command-line
        option, whose ``field`` (``"--drain-delay"``) says it all.
      field: the field, argument or option.
      at_least / above: the lower bound, inclusive or exclusive (at most one of them).
      at_most: the inclusive upper bound (with ``at_least``): the rule is ``within [a, b]``.
      finite: refuse ``inf`` and ``-inf`` (and NaN).
      none: accept None.
      error: raised for a value out of range, and for a wrong type unless ``type_error``.
      hint: appended to the message, e.g. ``"; 0 picks a free port"``.

    Returns:
      ``value``, unchanged.
    """
    if value is None and none:
        return None
    typed, ranged = _rule(_bounds(at_least, above, at_most), finite=finite, none=none)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(type_error or error, owner, field, typed, value, hint)
    if (
        math.isnan(value)
        or (finite and math.isinf(value))
        or not _in_range(value, at_least, above, at_most)
    ):
        raise _fail(error, owner, field, ranged, value, hint)
    return value


@overload
def integer(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: int | None = ...,
    at_most: int | None = ...,
    none: Literal[False] = ...,
    error: ErrorClass = ...,
    type_error: ErrorClass | None = ...,
    hint: str = ...,
) -> int: ...
@overload
def integer(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: int | None = ...,
    at_most: int | None = ...,
    none: Literal[True],
    error: ErrorClass = ...,
    type_error: ErrorClass | None = ...,
    hint: str = ...,
) -> int | None: ...
def integer(
    owner: str | None,
    field: str,
    value: object,
    *,
    at_least: int | None = None,
    at_most: int | None = None,
    none: bool = False,
    error: ErrorClass = ValueError,
    type_error: ErrorClass | None = None,
    hint: str = "",
) -> int | None:
    """Check that ``value`` is an int (not a bool, not a float) within the bounds.

    The arguments are those of ``number``; the rule reads ``an int >= 1`` for a value of the
    wrong type and ``>= 1`` for an int out of range.
    """
    if value is None and none:
        return None
    bounds = _bounds(at_least, None, at_most)
    tail = " or None" if none else ""
    if not isinstance(value, int) or isinstance(value, bool):
        rule = f"an int {bounds}{tail}" if bounds else f"an int{tail}"
        raise _fail(type_error or error, owner, field, rule, value, hint)
    if not _in_range(value, at_least, None, at_most):
        raise _fail(error, owner, field, f"{bounds}{tail}", value, hint)
    return value


def boolean(
    owner: str | None, field: str, value: object, *, error: ErrorClass = ValueError
) -> bool:
    """Check that ``value`` is ``True`` or ``False`` (``1``, ``0`` and ``None`` are not)."""
    if not isinstance(value, bool):
        raise _fail(error, owner, field, "a bool", value, "")
    return value


def describe(value: object) -> str:
    """``function 'worker'``, ``int 'int'``: the type and the name of a value, for messages."""
    name = getattr(value, "__qualname__", None) or type(value).__name__
    return f"{type(value).__name__} {name!r}"


def is_async_callable(fn: object) -> bool:
    """True when calling ``fn`` returns a coroutine (see the module docstring)."""
    # inspect.iscoroutinefunction already looks through functools.partial and
    # inspect.markcoroutinefunction; callable objects need their __call__ checked.
    if inspect.iscoroutinefunction(fn):
        return True
    return (
        callable(fn) and not inspect.isclass(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


def async_function(owner: str, field: str, fn: object, *, error: ErrorClass = ValueError) -> None:
    """Check that ``fn`` is an async function, not a sync one and not a coroutine object."""
    if inspect.iscoroutine(fn):
        # Close it so Python does not also warn "coroutine was never awaited".
        fn.close()
        raise error(
            f"{owner}: {field} must be an async function, not a coroutine object"
            f" (got {fn!r}); pass the function itself, e.g. {field}=worker, not worker()"
        )
    if not is_async_callable(fn):
        raise error(
            f"{owner}: {field} must be an async function (async def) that is called anew"
            f" on every start (got {describe(fn)}); write it with 'async def'"
        )
