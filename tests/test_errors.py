"""Tests for ``trio_supervise._errors``: the exception classes, their messages and attributes."""

from __future__ import annotations

import pytest

from trio_supervise import (
    ChildNotFoundError,
    ChildStartError,
    HealthCheckFailed,
    RestartIntensityExceeded,
    SpecError,
    SupervisionError,
)

# --------------------------------------------------------------- hierarchy


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)
    with pytest.raises(ValueError, match=r"^ChildSpec 'db': bad$"):
        raise SpecError("ChildSpec 'db': bad")


def test_child_not_found_is_a_lookup_error() -> None:
    assert issubclass(ChildNotFoundError, LookupError)


def test_supervision_error_is_a_runtime_error() -> None:
    assert issubclass(SupervisionError, RuntimeError)
    assert issubclass(ChildStartError, SupervisionError)


def test_restart_intensity_exceeded_is_a_plain_exception() -> None:
    assert issubclass(RestartIntensityExceeded, Exception)
    assert not issubclass(RestartIntensityExceeded, BaseExceptionGroup)


def test_health_check_failed_is_an_exception() -> None:
    assert issubclass(HealthCheckFailed, Exception)
    error = HealthCheckFailed("child 'db' failed 3 health checks")
    assert str(error) == "child 'db' failed 3 health checks"


# --------------------------------------------------------------- RestartIntensityExceeded


def test_restart_intensity_exceeded_attributes_and_message() -> None:
    error = RestartIntensityExceeded("db/pool", 3, 5.0)
    assert error.path == "db/pool"
    assert error.max_restarts == 3
    assert error.max_seconds == 5.0
    assert str(error) == "supervisor 'db/pool' gave up: more than 3 restarts within 5 seconds"


def test_restart_intensity_exceeded_at_the_root() -> None:
    error = RestartIntensityExceeded("", 0, 0.5)
    assert error.path == ""
    assert error.max_restarts == 0
    assert error.max_seconds == 0.5
    assert str(error) == "supervisor '' (the root) gave up: more than 0 restarts within 0.5 seconds"


def test_restart_intensity_exceeded_carries_the_last_error_as_cause() -> None:
    last = ValueError("boom")
    with pytest.raises(
        RestartIntensityExceeded,
        match=r"^supervisor 'db' gave up: more than 1 restarts within 10 seconds$",
    ) as excinfo:
        raise RestartIntensityExceeded("db", 1, 10.0) from last
    assert excinfo.value.__cause__ is last
    assert excinfo.value.path == "db"


# --------------------------------------------------------------- ChildNotFoundError


def test_child_not_found_message_is_not_quoted() -> None:
    error = ChildNotFoundError("db/pool", "db", ["conn", "cache"])
    message = (
        "no child at path 'db/pool': nearest existing supervisor is 'db',"
        " whose children are: 'conn', 'cache'"
    )
    # LookupError's own str() would wrap the message in quotes, like a KeyError.
    assert str(error) == message
    assert error.path == "db/pool"
    assert error.nearest == "db"


def test_child_not_found_under_the_root_without_children() -> None:
    error = ChildNotFoundError("ghost", "", [])
    assert str(error) == (
        "no child at path 'ghost': nearest existing supervisor is '' (the root),"
        " whose children are: none"
    )
    assert error.nearest == ""


def test_child_not_found_matches_with_pytest_raises() -> None:
    with pytest.raises(
        LookupError,
        match=(
            r"^no child at path 'a/b': nearest existing supervisor is 'a',"
            r" whose children are: 'c'$"
        ),
    ):
        raise ChildNotFoundError("a/b", "a", ["c"])


# --------------------------------------------------------------- ChildStartError


def test_child_start_error_message_path_and_cause() -> None:
    cause = ValueError("bad config")
    error = ChildStartError("db/pool", cause)
    assert str(error) == "child 'db/pool' failed to start: it raised ValueError: bad config"
    assert error.path == "db/pool"
    assert error.__cause__ is cause
    # Setting __cause__ suppresses the context, as ``raise ... from cause`` would.
    assert error.__suppress_context__ is True


def start_web(cause: OSError) -> None:
    try:
        raise cause
    except OSError as exc:
        raise ChildStartError("web", exc)  # noqa: B904 - __init__ sets the cause


def test_child_start_error_keeps_cause_when_raised() -> None:
    cause = OSError("port in use")
    with pytest.raises(
        ChildStartError, match=r"^child 'web' failed to start: it raised OSError: port in use$"
    ) as excinfo:
        start_web(cause)
    assert excinfo.value.__cause__ is cause
    assert excinfo.value.__suppress_context__ is True
    assert excinfo.value.path == "web"


def test_child_start_error_is_a_supervision_error() -> None:
    with pytest.raises(
        SupervisionError, match=r"^child 'x' failed to start: it raised Exception: $"
    ):
        raise ChildStartError("x", Exception())
