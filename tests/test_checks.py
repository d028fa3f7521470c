"""The argument checkers of ``trio_supervise._checks``: one rule, one message shape."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_supervise import SpecError, _checks

Checker = Callable[[object], object]

#: Every number rule the package uses, by name, as a one-argument checker.
NUMBER_RULES: dict[str, dict[str, Any]] = {
    "number": {},
    ">= 0": {"at_least": 0},
    ">= 0 or None": {"at_least": 0, "none": True},
    "> 0": {"above": 0},
    ">= 1 and finite": {"at_least": 1, "finite": True},
    "> 0 and finite": {"above": 0, "finite": True},
    "> 0 and finite or None": {"above": 0, "finite": True, "none": True},
    "finite or None": {"finite": True, "none": True},
    "within [0, 1]": {"at_least": 0, "at_most": 1},
}
FINITE_RULES = {name: kw for name, kw in NUMBER_RULES.items() if kw.get("finite")}
INT_RULES: dict[str, dict[str, Any]] = {
    ">= 0": {"at_least": 0},
    ">= 1": {"at_least": 1},
    ">= 0 or None": {"at_least": 0, "none": True},
    "within [0, 65535]": {"at_least": 0, "at_most": 65535},
}

rule_names = st.sampled_from(sorted(NUMBER_RULES))
finite_rule_names = st.sampled_from(sorted(FINITE_RULES))
int_rule_names = st.sampled_from(sorted(INT_RULES))


def number(rule: str) -> Checker:
    return functools.partial(_checks.number, "Owner 'x'", "field", **NUMBER_RULES[rule])


def integer(rule: str) -> Checker:
    return functools.partial(_checks.integer, "Owner 'x'", "field", **INT_RULES[rule])


def refusal(check: Checker, value: object) -> str:
    """The message of the ValueError ``check(value)`` raises."""
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{value!r} passed")


# ------------------------------------------------------------------ the rules, by property


@given(rule=rule_names, value=st.booleans())
def test_every_number_rule_refuses_every_bool(rule: str, value: bool) -> None:
    text = refusal(number(rule), value)
    assert text.startswith("Owner 'x': field must be a ")
    assert text.endswith(f"(got {value!r})")


@given(rule=int_rule_names, value=st.booleans())
def test_every_int_rule_refuses_every_bool(rule: str, value: bool) -> None:
    with pytest.raises(ValueError, match=r"^Owner 'x': field must be an int "):
        integer(rule)(value)


@given(rule=rule_names)
def test_every_number_rule_refuses_nan(rule: str) -> None:
    with pytest.raises(ValueError, match=r"\(got nan\)$"):
        number(rule)(math.nan)


@given(rule=finite_rule_names, value=st.sampled_from([math.inf, -math.inf, math.nan]))
def test_every_finite_rule_refuses_every_non_finite_float(rule: str, value: float) -> None:
    text = refusal(number(rule), value)
    assert text == f"Owner 'x': field must be {rule} (got {value!r})"


@given(rule=rule_names, value=st.floats(allow_nan=False) | st.integers())
def test_a_number_passes_exactly_when_it_keeps_the_rule(rule: str, value: float) -> None:
    kw = NUMBER_RULES[rule]
    keeps = (
        (not kw.get("finite") or math.isfinite(value))
        and ("at_least" not in kw or value >= kw["at_least"])
        and ("above" not in kw or value > kw["above"])
        and ("at_most" not in kw or value <= kw["at_most"])
    )
    if keeps:
        assert number(rule)(value) is value
    else:
        # A value of the right type out of range: the rule alone, as attrs' validators say.
        text = refusal(number(rule), value)
        assert text == f"Owner 'x': field must be {rule} (got {value!r})"


@given(rule=int_rule_names, value=st.integers())
def test_an_int_passes_exactly_when_it_keeps_the_rule(rule: str, value: int) -> None:
    kw = INT_RULES[rule]
    keeps = value >= kw["at_least"] and ("at_most" not in kw or value <= kw["at_most"])
    if keeps:
        assert integer(rule)(value) is value
    else:
        text = refusal(integer(rule), value)
        assert text == f"Owner 'x': field must be {rule} (got {value!r})"


@given(rule=int_rule_names, value=st.floats())
def test_an_int_rule_refuses_every_float(rule: str, value: float) -> None:
    # 2.0 is no count of restarts: an int rule takes ints only.
    text = refusal(integer(rule), value)
    assert text == f"Owner 'x': field must be an int {rule} (got {value!r})"


@given(
    rule=rule_names,
    value=st.text(max_size=3) | st.lists(st.integers(), max_size=2) | st.complex_numbers(),
)
def test_a_number_rule_names_the_kind_for_a_value_of_another_type(rule: str, value: object) -> None:
    text = refusal(number(rule), value)
    kind = "a finite number" if NUMBER_RULES[rule].get("finite") else "a number"
    assert text.startswith(f"Owner 'x': field must be {kind}")
    assert text.endswith(f"(got {value!r})")


@given(rule=rule_names)
def test_none_passes_exactly_when_the_rule_says_or_none(rule: str) -> None:
    if rule.endswith("or None"):
        assert number(rule)(None) is None
    else:
        with pytest.raises(ValueError, match=r"\(got None\)$"):
            number(rule)(None)


# ------------------------------------------------------------------------ the messages


@pytest.mark.parametrize(
    ("kwargs", "value", "text"),
    [
        ({"at_least": 0, "none": True}, -1, "shutdown_timeout must be >= 0 or None (got -1)"),
        (
            {"at_least": 0, "none": True},
            "5",
            "shutdown_timeout must be a number >= 0 or None (got '5')",
        ),
        (
            {"above": 0, "finite": True},
            math.inf,
            "shutdown_timeout must be > 0 and finite (got inf)",
        ),
        (
            {"above": 0, "finite": True},
            "5",
            "shutdown_timeout must be a finite number > 0 (got '5')",
        ),
        (
            {"finite": True, "none": True},
            math.nan,
            "shutdown_timeout must be finite or None (got nan)",
        ),
        (
            {"finite": True, "none": True},
            True,
            "shutdown_timeout must be a finite number or None (got True)",
        ),
        ({"at_least": 0, "at_most": 1}, 2, "shutdown_timeout must be within [0, 1] (got 2)"),
    ],
)
def test_number_messages(kwargs: dict[str, Any], value: object, text: str) -> None:
    with pytest.raises(ValueError, match=rf"^ChildSpec 'db': {re.escape(text)}$"):
        _checks.number("ChildSpec 'db'", "shutdown_timeout", value, **kwargs)


def test_the_error_classes_and_the_hint() -> None:
    with pytest.raises(SpecError, match=r"^S: port must be within \[0, 65535\] \(got -1\); hi$"):
        _checks.integer("S", "port", -1, at_least=0, at_most=65535, error=SpecError, hint="; hi")
    # A value of the wrong type may raise another class; one out of range raises ``error``.
    with pytest.raises(TypeError, match=r"^plot: until must be a finite number or None"):
        _checks.number("plot", "until", "x", finite=True, none=True, type_error=TypeError)
    with pytest.raises(ValueError, match=r"^plot: until must be finite or None \(got inf\)$"):
        _checks.number("plot", "until", math.inf, finite=True, none=True, type_error=TypeError)


def test_an_option_without_owner_is_named_alone() -> None:
    with pytest.raises(ValueError, match=r"^--drain-delay must be >= 0 \(got -1\)$"):
        _checks.number(None, "--drain-delay", -1, at_least=0)


def test_infinity_passes_a_rule_that_is_not_finite() -> None:
    # A time limit of inf means no limit, as None does.
    assert _checks.number("O", "f", math.inf, at_least=0) == math.inf


# ------------------------------------------------------------------------------- bools


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_passes_the_bool_rule(value: bool) -> None:
    assert _checks.boolean("O", "significant", value) is value


@pytest.mark.parametrize("value", [1, 0, None, "yes", 1.0])
def test_the_bool_rule_refuses_values_that_are_only_truthy(value: object) -> None:
    with pytest.raises(
        SpecError, match=rf"^O: significant must be a bool \(got {re.escape(repr(value))}\)$"
    ):
        _checks.boolean("O", "significant", value, error=SpecError)


# ---------------------------------------------------------------------- async functions


async def coroutine_function() -> None:
    pass  # pragma: no cover


def sync_function() -> None:
    pass  # pragma: no cover


class AsyncCallable:
    async def __call__(self) -> None:
        pass  # pragma: no cover


class SyncCallable:
    def __call__(self) -> None:
        pass  # pragma: no cover


class Methods:
    async def run(self) -> None:
        pass  # pragma: no cover

    def sync(self) -> None:
        pass  # pragma: no cover


@pytest.mark.parametrize(
    "fn",
    [
        coroutine_function,
        functools.partial(coroutine_function),
        functools.partial(functools.partial(coroutine_function)),
        AsyncCallable(),
        Methods().run,
    ],
)
def test_async_callables_pass(fn: object) -> None:
    assert _checks.is_async_callable(fn)
    _checks.async_function("O", "target", fn)


@pytest.mark.parametrize(
    "fn",
    [
        sync_function,
        functools.partial(sync_function),
        SyncCallable(),
        Methods().sync,
        AsyncCallable,  # the class: calling it builds an object, not a coroutine
        None,
        3,
    ],
)
def test_other_values_are_refused_as_async_functions(fn: object) -> None:
    assert not _checks.is_async_callable(fn)
    with pytest.raises(
        SpecError,
        match=r"^O: target must be an async function \(async def\) that is called anew on every"
        rf" start \(got {re.escape(_checks.describe(fn))}\); write it with 'async def'$",
    ):
        _checks.async_function("O", "target", fn, error=SpecError)


def test_a_coroutine_object_is_refused_and_closed() -> None:
    coroutine = coroutine_function()
    with pytest.raises(ValueError, match=r"^O: target must be an async function, not a coroutine"):
        _checks.async_function("O", "target", coroutine)
    # Closed: awaiting it now fails at once, and Python does not warn "never awaited".
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        coroutine.send(None)


# ------------------------------------------------------------------------------ layering


def test_checks_imports_nothing_from_the_package() -> None:
    import ast
    from pathlib import Path

    source = Path(_checks.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, ast.unparse(node)
            assert not (node.module or "").startswith("trio_supervise"), ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert all(not alias.name.startswith("trio_supervise") for alias in node.names)
