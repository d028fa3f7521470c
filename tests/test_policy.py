"""Tests for ``trio_supervise._policy`` (pure restart policy) and the backoff arithmetic.

Plain numbers only: the intensity window is checked at its exact boundaries and against a
brute-force model of the contract's rule with hypothesis.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_supervise import AutoShutdown, Backoff, Restart, Strategy
from trio_supervise._policy import (
    RestartWindow,
    auto_shutdown_due,
    restart_group,
    should_restart,
)

# --------------------------------------------------------------- RestartWindow: examples


def test_allows_exactly_max_restarts_then_denies() -> None:
    window = RestartWindow(max_restarts=3, max_seconds=5.0)
    assert [window.allow(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert window.allow(3.0) is False


def test_simultaneous_restarts_count_each() -> None:
    window = RestartWindow(max_restarts=2, max_seconds=5.0)
    assert [window.allow(1.0) for _ in range(3)] == [True, True, False]


def test_max_restarts_zero_denies_the_first_restart() -> None:
    window = RestartWindow(max_restarts=0, max_seconds=5.0)
    assert window.allow(0.0) is False


def test_max_restarts_zero_denies_even_after_a_long_time() -> None:
    window = RestartWindow(max_restarts=0, max_seconds=1.0)
    assert window.allow(1000.0) is False


def test_restart_at_exactly_window_end_still_counts() -> None:
    # A restart stays in the window while now - t <= max_seconds.
    window = RestartWindow(max_restarts=1, max_seconds=5.0)
    assert window.allow(1.0) is True
    assert window.allow(6.0) is False  # 6.0 - 1.0 == 5.0: the restart at 1.0 still counts


def test_restart_just_after_window_end_no_longer_counts() -> None:
    window = RestartWindow(max_restarts=1, max_seconds=5.0)
    assert window.allow(1.0) is True
    assert window.allow(math.nextafter(6.0, math.inf)) is True


def test_window_slides() -> None:
    window = RestartWindow(max_restarts=2, max_seconds=10.0)
    assert window.allow(0.0) is True
    assert window.allow(4.0) is True
    # 0.0 and 4.0 are still in the window at 10.0: this is the third within 10 seconds.
    assert window.allow(10.0) is False


def test_window_slides_past_old_restarts() -> None:
    window = RestartWindow(max_restarts=2, max_seconds=10.0)
    assert window.allow(0.0) is True
    assert window.allow(4.0) is True
    # 0.0 has left the window at 10.5; 4.0 is still in it.
    assert window.allow(10.5) is True
    # 4.0 and 10.5 are in the window at 14.0.
    assert window.allow(14.0) is False
    assert len(window) == 3


def test_len_counts_restarts_in_window() -> None:
    window = RestartWindow(max_restarts=10, max_seconds=1.0)
    for t in (0.0, 0.25, 0.5, 1.0):
        window.allow(t)
    assert len(window) == 4  # 1.0 - 0.0 == 1.0: all still inside
    window.allow(1.75)
    assert len(window) == 2  # only 1.0 and 1.75 remain (0.5 is 1.25 s old)


def test_restarts_spread_out_are_always_allowed() -> None:
    window = RestartWindow(max_restarts=1, max_seconds=1.0)
    assert all(window.allow(2.0 * i) for i in range(1000))
    assert len(window) == 1


def test_window_keeps_only_recent_times() -> None:
    window = RestartWindow(max_restarts=3, max_seconds=2.0)
    for i in range(10_000):
        window.allow(float(i))
    assert len(window) == 3  # 9997, 9998, 9999


def test_window_attributes() -> None:
    window = RestartWindow(max_restarts=4, max_seconds=2.5)
    assert window.max_restarts == 4
    assert window.max_seconds == 2.5
    assert len(window) == 0


# --------------------------------------------------------------- RestartWindow: model


def model_decisions(times: list[float], max_restarts: int, max_seconds: float) -> list[bool]:
    """The contract's rule, by brute force.

    A restart decided at ``times[i]`` is allowed iff the number of restarts decided at
    ``times[j]`` (``j <= i``, this one included) with ``times[i] - times[j] <= max_seconds``
    is at most ``max_restarts``. Every decided restart counts from the moment it is decided.
    """
    return [
        sum(1 for t_j in times[: i + 1] if t_i - t_j <= max_seconds) <= max_restarts
        for i, t_i in enumerate(times)
    ]


def up_to_first_denial(decisions: list[bool]) -> list[bool]:
    # The supervisor gives up at its first denial, so later decisions never matter.
    if False in decisions:
        return decisions[: decisions.index(False) + 1]
    return decisions


# Gaps are drawn from exact multiples of 0.25 (so that exact-boundary times, where
# t_i - t_j == max_seconds, come up often), from zero (simultaneous restarts) and from
# arbitrary floats.
QUARTER = st.integers(min_value=0, max_value=40).map(lambda k: k / 4)
GAPS = st.one_of(st.just(0.0), QUARTER, st.floats(min_value=0, max_value=10))
MAX_SECONDS = st.one_of(
    st.integers(min_value=1, max_value=20).map(lambda k: k / 4),
    st.floats(min_value=1e-6, max_value=20),
)


@st.composite
def crash_times(draw: st.DrawFn) -> list[float]:
    start = draw(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e6)))
    times = [start]
    for gap in draw(st.lists(GAPS, max_size=40)):
        times.append(times[-1] + gap)
    return times


@given(
    times=crash_times(),
    max_restarts=st.integers(min_value=0, max_value=8),
    max_seconds=MAX_SECONDS,
)
@example(times=[0.0, 5.0], max_restarts=1, max_seconds=5.0)
@example(times=[0.0, 5.0, 5.0], max_restarts=2, max_seconds=5.0)
@example(times=[1.0, 1.0, 1.0, 6.0, 6.25], max_restarts=3, max_seconds=5.0)
@example(times=[0.0], max_restarts=0, max_seconds=1.0)
def test_restart_window_matches_brute_force_model(
    times: list[float], max_restarts: int, max_seconds: float
) -> None:
    window = RestartWindow(max_restarts, max_seconds)
    actual = up_to_first_denial([window.allow(t) for t in times])
    expected = up_to_first_denial(model_decisions(times, max_restarts, max_seconds))
    assert actual == expected


@given(
    times=crash_times(),
    max_restarts=st.integers(min_value=1, max_value=8),
    max_seconds=MAX_SECONDS,
)
def test_restart_window_never_allows_more_than_max_in_any_window(
    times: list[float], max_restarts: int, max_seconds: float
) -> None:
    window = RestartWindow(max_restarts, max_seconds)
    allowed: list[float] = []
    for t in times:
        if not window.allow(t):
            break
        allowed.append(t)
    # Whatever the series, the allowed restarts never crowd more than max_restarts into
    # one closed window of max_seconds.
    for i, t_i in enumerate(allowed):
        assert sum(1 for t_j in allowed[: i + 1] if t_i - t_j <= max_seconds) <= max_restarts


# --------------------------------------------------------------- should_restart


@pytest.mark.parametrize(
    ("policy", "abnormal", "expected"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, False),
        (Restart.TRANSIENT, True, True),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
def test_should_restart_truth_table(policy: Restart, abnormal: bool, expected: bool) -> None:
    assert should_restart(policy, abnormal) is expected


# --------------------------------------------------------------- restart_group

CHILDREN = ["a", "b", "c", "d"]


@pytest.mark.parametrize("failed", CHILDREN)
def test_one_for_one_restarts_only_the_failed_child(failed: str) -> None:
    assert restart_group(Strategy.ONE_FOR_ONE, CHILDREN, failed) == [failed]


@pytest.mark.parametrize("failed", CHILDREN)
def test_one_for_all_restarts_every_child_in_start_order(failed: str) -> None:
    assert restart_group(Strategy.ONE_FOR_ALL, CHILDREN, failed) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        ("a", ["a", "b", "c", "d"]),
        ("b", ["b", "c", "d"]),
        ("c", ["c", "d"]),
        ("d", ["d"]),
    ],
)
def test_rest_for_one_restarts_failed_and_later_children(failed: str, expected: list[str]) -> None:
    assert restart_group(Strategy.REST_FOR_ONE, CHILDREN, failed) == expected


def test_restart_group_single_child() -> None:
    for strategy in Strategy:
        assert restart_group(strategy, ["only"], "only") == ["only"]


def test_restart_group_returns_a_new_list() -> None:
    children = ["a", "b"]
    group = restart_group(Strategy.ONE_FOR_ALL, children, "a")
    group.append("c")
    assert children == ["a", "b"]


def test_restart_group_works_on_tuples_of_objects() -> None:
    a, b, c = object(), object(), object()
    group = restart_group(Strategy.REST_FOR_ONE, (a, b, c), b)
    assert len(group) == 2
    assert group[0] is b
    assert group[1] is c


# --------------------------------------------------------------- auto_shutdown_due


@pytest.mark.parametrize(
    ("mode", "gone", "expected"),
    [
        (AutoShutdown.NEVER, [], False),
        (AutoShutdown.NEVER, [True], False),
        (AutoShutdown.NEVER, [True, True], False),
        (AutoShutdown.ANY_SIGNIFICANT, [], False),
        (AutoShutdown.ANY_SIGNIFICANT, [False], False),
        (AutoShutdown.ANY_SIGNIFICANT, [True], True),
        (AutoShutdown.ANY_SIGNIFICANT, [False, True], True),
        (AutoShutdown.ANY_SIGNIFICANT, [False, False], False),
        (AutoShutdown.ALL_SIGNIFICANT, [], False),
        (AutoShutdown.ALL_SIGNIFICANT, [False], False),
        (AutoShutdown.ALL_SIGNIFICANT, [True], True),
        (AutoShutdown.ALL_SIGNIFICANT, [True, False], False),
        (AutoShutdown.ALL_SIGNIFICANT, [True, True, True], True),
    ],
)
def test_auto_shutdown_due(mode: AutoShutdown, gone: list[bool], expected: bool) -> None:
    assert auto_shutdown_due(mode, gone) is expected


# --------------------------------------------------------------- Backoff properties


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    # initial >= 1e-6: below that maximum / initial can overflow to inf, an edge that
    # test_spec.py pins down with its own test.
    initial = draw(st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=100)))
    maximum = draw(st.floats(min_value=initial, max_value=1e6))
    factor = draw(st.one_of(st.just(1.0), st.just(2.0), st.floats(min_value=1, max_value=10)))
    jitter = draw(st.floats(min_value=0, max_value=1))
    return Backoff(initial=initial, maximum=maximum, factor=factor, jitter=jitter)


def contract_base_delay(backoff: Backoff, attempt: int) -> float:
    """``min(maximum, initial * factor**(attempt-1))``, as the contract states it."""
    if backoff.initial == 0:
        return 0.0  # 0 * factor**n is 0 even where factor**n overflows
    try:
        grown = backoff.initial * backoff.factor ** (attempt - 1)
    except OverflowError:
        return backoff.maximum
    return min(backoff.maximum, grown)


ATTEMPTS = st.one_of(
    st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=100_000)
)


@given(backoff=backoffs(), attempt=ATTEMPTS)
@example(backoff=Backoff(initial=1.0, maximum=8.0, factor=2.0), attempt=4)
@example(backoff=Backoff(initial=0.1, maximum=30.0), attempt=10_000)
def test_base_delay_matches_contract_formula(backoff: Backoff, attempt: int) -> None:
    actual = backoff.base_delay(attempt)
    expected = contract_base_delay(backoff, attempt)
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=0.0)
    assert 0.0 <= actual <= backoff.maximum


@given(backoff=backoffs(), attempt=ATTEMPTS, seed=st.integers(min_value=0, max_value=2**32))
def test_delay_is_within_jitter_bounds(backoff: Backoff, attempt: int, seed: int) -> None:
    rng = random.Random(seed)
    base = backoff.base_delay(attempt)
    delay = backoff.delay(attempt, rng)
    assert base <= delay <= base * (1 + backoff.jitter)


@given(backoff=backoffs(), attempt=ATTEMPTS, seed=st.integers(min_value=0, max_value=2**32))
def test_delay_without_jitter_equals_base_delay(backoff: Backoff, attempt: int, seed: int) -> None:
    exact = Backoff(
        initial=backoff.initial, maximum=backoff.maximum, factor=backoff.factor, jitter=0.0
    )
    assert exact.delay(attempt, random.Random(seed)) == exact.base_delay(attempt)


@given(backoff=backoffs(), attempt=st.integers(min_value=1, max_value=5000))
def test_base_delay_is_non_decreasing(backoff: Backoff, attempt: int) -> None:
    assert backoff.base_delay(attempt) <= backoff.base_delay(attempt + 1)


@given(backoff=backoffs())
def test_base_delay_first_attempt_is_initial(backoff: Backoff) -> None:
    assert backoff.base_delay(1) == backoff.initial
