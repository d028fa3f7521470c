"""Prometheus metrics fed by a tree's events: restarts, up, crashes, removal, shutdown, health."""

from __future__ import annotations

import importlib
import logging
import random
import sys

import pytest
import trio
import trio.testing
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_supervise import (
    Backoff,
    Band,
    ChildSpec,
    ChildState,
    Event,
    EventKind,
    Restart,
    RestartIntensityExceeded,
    ShutdownHook,
    Strategy,
    SupervisorSpec,
    SupervisorTree,
    current_tree,
    supervisor_tree,
)
from trio_supervise.integrations.metrics import TreeMetrics
from trio_supervise.testing import (
    MemoryLock,
    crash_after,
    flaky,
    return_after,
    sleeper,
    slow_stop,
    wait_state,
)

Scrape = dict[str, dict[str, float]]

NO_JITTER = Backoff(initial=1.0, maximum=30.0, factor=2.0, jitter=0.0)


class HookError(Exception):
    pass


def scrape(metrics: TreeMetrics) -> Scrape:
    """Parse ``exposition()``: sample name -> {its one label's value ('' for none): value}.

    Every metric of ``TreeMetrics`` has at most one label.
    """
    body, content_type = metrics.exposition()
    assert content_type == CONTENT_TYPE_LATEST
    result: Scrape = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            assert not sample.name.endswith("_created"), sample
            assert len(sample.labels) <= 1, sample
            label = next(iter(sample.labels.values()), "")
            result.setdefault(sample.name, {})[label] = sample.value
    return result


def per_path(samples: Scrape, metric: str) -> dict[str, float]:
    return samples.get(f"trio_supervise_{metric}", {})


PATH_METRICS = (
    "child_up",
    "child_restarts_total",
    "child_crashes_total",
    "child_stop_timeouts_total",
)


def paths_with_series(samples: Scrape) -> set[str]:
    """The child paths with series; every per-path metric must have the same ones."""
    found = [set(per_path(samples, metric)) for metric in PATH_METRICS]
    assert all(paths == found[0] for paths in found), found
    return found[0]


def events_total(samples: Scrape) -> dict[str, float]:
    """The non-zero ``events_total`` counts, by kind."""
    return {kind: value for kind, value in per_path(samples, "events_total").items() if value}


# ---------------------------------------------------------------------------- restarts


async def test_one_for_one_restart_is_counted_when_decided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app", [ChildSpec("w", crash_after(1.0)), ChildSpec("s", sleeper())], backoff=NO_JITTER
    )
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {"w": 1.0, "s": 1.0}
        assert per_path(samples, "child_restarts_total") == {"w": 0.0, "s": 0.0}
        assert per_path(samples, "child_crashes_total") == {"w": 0.0, "s": 0.0}
        # Every kind is there from the start, at 0.
        assert set(per_path(samples, "events_total")) == {kind.value for kind in EventKind}
        assert events_total(samples) == {}

        # Crashed at 1.0, restart decided at once, due at 2.0 (backoff 1s).
        await trio.sleep_until(1.5)
        samples = scrape(metrics)
        assert tree.info("w").restarts == 1
        assert per_path(samples, "child_restarts_total") == {"w": 1.0, "s": 0.0}
        assert per_path(samples, "child_up") == {"w": 0.0, "s": 1.0}
        assert per_path(samples, "child_crashes_total") == {"w": 1.0, "s": 0.0}
        assert events_total(samples) == {"crashed": 1.0, "restart_scheduled": 1.0}

        await trio.sleep_until(2.5)
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {"w": 1.0, "s": 1.0}
        assert per_path(samples, "child_restarts_total") == {"w": 1.0, "s": 0.0}
        assert events_total(samples) == {"crashed": 1.0, "restart_scheduled": 1.0, "restarted": 1.0}

        # Second crash at 3.0, backoff 2s: restarted at 5.0; third crash at 6.0.
        await trio.sleep_until(6.5)
        samples = scrape(metrics)
        assert tree.info("w").restarts == 3
        assert per_path(samples, "child_restarts_total") == {"w": 3.0, "s": 0.0}
        assert per_path(samples, "child_crashes_total") == {"w": 3.0, "s": 0.0}
        assert per_path(samples, "child_up") == {"w": 0.0, "s": 1.0}
        tree.shutdown()


async def test_group_restart_counts_every_child_it_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [
            ChildSpec("a", crash_after(1.0, starts=1)),
            ChildSpec("b", sleeper()),
            ChildSpec("c", sleeper()),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=NO_JITTER,
    )
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        await trio.sleep_until(1.5)
        # The decision restarts all three; only the one that crashed has an event saying so
        # yet: b and c were stopped (EXITED) and wait for the backoff with it.
        assert [tree.info(p).restarts for p in "abc"] == [1, 1, 1]
        samples = scrape(metrics)
        assert per_path(samples, "child_restarts_total") == {"a": 1.0, "b": 0.0, "c": 0.0}
        assert per_path(samples, "child_up") == {"a": 0.0, "b": 0.0, "c": 0.0}
        assert per_path(samples, "child_crashes_total") == {"a": 1.0, "b": 0.0, "c": 0.0}

        await trio.sleep_until(2.5)
        samples = scrape(metrics)
        assert per_path(samples, "child_restarts_total") == {"a": 1.0, "b": 1.0, "c": 1.0}
        assert per_path(samples, "child_up") == {"a": 1.0, "b": 1.0, "c": 1.0}
        assert events_total(samples) == {
            "crashed": 1.0,
            "exited": 2.0,
            "restart_scheduled": 1.0,
            "restarted": 3.0,
        }

        # restart_child counts as a restart too, as the tree counts it.
        await tree.restart_child("b")
        assert tree.info("b").restarts == 2
        assert per_path(scrape(metrics), "child_restarts_total") == {"a": 1.0, "b": 2.0, "c": 1.0}
        tree.shutdown()


async def test_flaky_child_counters_match_the_seeded_draws_and_the_tree(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed, probability = 7, 0.4
    draws = random.Random(seed)
    # One draw per second (backoff None: each run starts at once and draws 1s later).
    expected = sum(draws.random() < probability for _ in range(30))
    spec = SupervisorSpec(
        "app",
        [ChildSpec("f", flaky(probability, interval=1.0, seed=seed))],
        backoff=None,
        max_restarts=100,
        max_seconds=1.0,
    )
    metrics = TreeMetrics()
    # Read after every restart decision: the counter already equals the event's count.
    at_decision: list[tuple[float, int]] = []

    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)

        def check(event: Event) -> None:
            if event.kind is EventKind.RESTART_SCHEDULED:
                value = per_path(scrape(metrics), "child_restarts_total")["f"]
                at_decision.append((value, event.restarts))

        tree.add_event_listener(check)  # after attach: called after the metrics' listener
        await trio.sleep_until(30.5)
        samples = scrape(metrics)
        crashes = [e for e in tree.history if e.kind is EventKind.CRASHED and e.path == "f"]
        assert len(crashes) == expected == 17
        assert per_path(samples, "child_crashes_total") == {"f": float(expected)}
        assert per_path(samples, "child_restarts_total") == {"f": float(expected)}
        assert tree.info("f").restarts == expected
        assert per_path(samples, "child_up") == {"f": 1.0}
        assert at_decision == [(float(n), n) for n in range(1, expected + 1)]
        tree.shutdown()


# ------------------------------------------------------------------- nested and removal


async def test_nested_paths_and_a_supervisor_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [
            SupervisorSpec(
                "db", [ChildSpec("pool", crash_after(1.0, starts=1))], max_restarts=0, backoff=None
            ),
            ChildSpec("w", sleeper()),
        ],
        backoff=None,
    )
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        await tree.start_child(ChildSpec("extra", sleeper()), under="db")
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {
            "db": 1.0,
            "db/pool": 1.0,
            "db/extra": 1.0,
            "w": 1.0,
        }
        assert per_path(samples, "supervisor_intensity_exceeded_total") == {"": 0.0, "db": 0.0}

        # db/pool crashes at 1.0; db allows no restart, gives up and is restarted by the
        # root with its spec's children only: db/extra is gone from the tree.
        await trio.sleep_until(1.5)
        assert [info.path for info in tree.children("db")] == ["db/pool"]
        samples = scrape(metrics)
        assert paths_with_series(samples) == {"db", "db/pool", "w"}
        assert per_path(samples, "child_up") == {"db": 1.0, "db/pool": 1.0, "w": 1.0}
        assert per_path(samples, "supervisor_intensity_exceeded_total") == {"": 0.0, "db": 1.0}
        assert per_path(samples, "child_crashes_total") == {"db": 1.0, "db/pool": 1.0, "w": 0.0}
        # db/pool is a new child with no restarts; db was restarted once.
        assert tree.info("db/pool").restarts == 0
        assert per_path(samples, "child_restarts_total") == {"db": 1.0, "db/pool": 0.0, "w": 0.0}

        # Deleting a supervisor drops the series of everything below it.
        await tree.terminate_child("db")
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {"db": 0.0, "db/pool": 0.0, "w": 1.0}
        tree.delete_child("db")
        samples = scrape(metrics)
        assert paths_with_series(samples) == {"w"}
        assert per_path(samples, "supervisor_intensity_exceeded_total") == {"": 0.0}
        tree.shutdown()


async def test_terminate_stop_timeout_delete_and_temporary_removal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [
            ChildSpec("t", return_after(1.0), restart=Restart.TEMPORARY),
            ChildSpec("p", sleeper()),
            ChildSpec("slow", slow_stop(10.0), shutdown_timeout=2.0),
        ],
    )
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        assert paths_with_series(scrape(metrics)) == {"t", "p", "slow"}
        await trio.sleep_until(1.5)
        # The temporary child returned and was removed: its series went with it.
        assert paths_with_series(scrape(metrics)) == {"p", "slow"}

        await tree.terminate_child("p")
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {"p": 0.0, "slow": 1.0}
        tree.delete_child("p")
        assert paths_with_series(scrape(metrics)) == {"slow"}

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.terminate_child, "slow")
            await trio.sleep_until(5.0)  # asked at 1.5, overran at 3.5, exits at 11.5
            samples = scrape(metrics)
            assert per_path(samples, "child_stop_timeouts_total") == {"slow": 1.0}
            assert per_path(samples, "child_up") == {"slow": 1.0}  # still running
        assert trio.current_time() == pytest.approx(11.5)
        samples = scrape(metrics)
        assert per_path(samples, "child_up") == {"slow": 0.0}
        assert events_total(samples) == {
            "exited": 1.0,
            "removed": 2.0,
            "terminated": 2.0,
            "stop_timeout": 1.0,
        }


async def test_label_values_are_escaped_and_parsed_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    name = 'say "hi" \\ back\nnow'
    spec = SupervisorSpec("app", [SupervisorSpec("db", [ChildSpec(name, sleeper())])])
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        assert per_path(scrape(metrics), "child_up") == {"db": 1.0, f"db/{name}": 1.0}
        tree.shutdown()


# ---------------------------------------------------------------------------- shutdown


async def test_shutdown_metrics_with_a_failing_and_a_slow_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = TreeMetrics()
    during: list[Scrape] = []

    async def probe() -> None:
        during.append(scrape(metrics))

    async def failing() -> None:
        await trio.sleep(0.5)
        raise HookError("flush failed")

    async def slow() -> None:
        await trio.sleep(10.0)

    async def cleanup() -> None:
        await trio.sleep(1.0)

    spec = SupervisorSpec("app", [ChildSpec("slow-child", slow_stop(3.0))])
    hooks = [
        ShutdownHook("probe", probe, priority=Band.STOP_ACCEPTING),
        ShutdownHook("flush", failing, priority=Band.FLUSH),
        ShutdownHook("close", slow, priority=Band.CLOSE, timeout=2.0),
        ShutdownHook("cleanup", cleanup, priority=Band.CLEANUP),
    ]
    async with supervisor_tree(spec, hooks=hooks) as tree:
        metrics.attach(tree)
        samples = scrape(metrics)
        assert per_path(samples, "shutdown_in_progress") == {"": 0.0}
        assert per_path(samples, "shutdown_duration_seconds") == {"": 0.0}
        assert per_path(samples, "shutdown_hook_duration_seconds") == {}
        assert per_path(samples, "shutdown_hook_errors_total") == {}
        await trio.sleep(1.0)

    # Started at 1.0: probe 0, supervisor 3 (the child's clean-up), flush 0.5, close 2
    # (its timeout), cleanup 1.
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.started == pytest.approx(1.0)
    assert [s["trio_supervise_shutdown_in_progress"] for s in during] == [{"": 1.0}]
    samples = scrape(metrics)
    assert per_path(samples, "shutdown_in_progress") == {"": 0.0}
    assert per_path(samples, "shutdown_duration_seconds") == {"": 6.5}
    assert per_path(samples, "shutdown_hook_duration_seconds") == {
        "supervisor": 3.0,
        "probe": 0.0,
        "flush": 0.5,
        "close": 2.0,
        "cleanup": 1.0,
    }
    # "error" and "timed_out" count; every hook has its series.
    assert per_path(samples, "shutdown_hook_errors_total") == {
        "supervisor": 0.0,
        "probe": 0.0,
        "flush": 1.0,
        "close": 1.0,
        "cleanup": 0.0,
    }
    assert per_path(samples, "child_up") == {"slow-child": 0.0}
    assert events_total(samples) == {
        "shutdown_started": 1.0,
        "terminated": 1.0,
        "hook_finished": 5.0,
        "shutdown_finished": 1.0,
    }
    # The tree has ended: read at scrape time, its health says so.
    assert per_path(samples, "tree_health_status") == {
        "healthy": 0.0,
        "degraded": 0.0,
        "unhealthy": 1.0,
    }
    assert per_path(samples, "tree_ready") == {"": 0.0}
    assert per_path(samples, "tree_live") == {"": 0.0}


async def test_hooks_cut_by_the_deadline_are_not_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def long() -> None:
        await trio.sleep(10.0)

    async def after() -> None:
        raise AssertionError("a band after the deadline must not start")  # pragma: no cover

    metrics = TreeMetrics()
    hooks = [
        ShutdownHook("long", long, priority=Band.FLUSH),
        ShutdownHook("after", after, priority=Band.CLOSE),
    ]
    async with supervisor_tree(
        SupervisorSpec("app", [ChildSpec("w", sleeper())]), hooks=hooks, shutdown_deadline=2.0
    ) as tree:
        metrics.attach(tree)

    assert tree.shutdown_report is not None
    assert [(h.name, h.status) for h in tree.shutdown_report.hooks] == [
        ("supervisor", "ok"),
        ("long", "cancelled"),
        ("after", "skipped"),
    ]
    samples = scrape(metrics)
    assert per_path(samples, "shutdown_duration_seconds") == {"": 2.0}
    assert per_path(samples, "shutdown_hook_duration_seconds") == {
        "supervisor": 0.0,
        "long": 2.0,
        "after": 0.0,
    }
    assert per_path(samples, "shutdown_hook_errors_total") == {
        "supervisor": 0.0,
        "long": 0.0,
        "after": 0.0,
    }


async def test_reattached_to_a_new_tree(autojump_clock: trio.testing.MockClock) -> None:
    async def bad() -> None:
        raise HookError("no")

    async def fine() -> None:
        pass

    metrics = TreeMetrics()
    first = SupervisorSpec(
        "app", [ChildSpec("w", crash_after(1.0)), ChildSpec("x", sleeper())], backoff=None
    )
    async with supervisor_tree(first, hooks=[ShutdownHook("a", bad, priority=30)]) as tree:
        detach = metrics.attach(tree)
        await trio.sleep_until(2.5)
    detach()
    samples = scrape(metrics)
    assert per_path(samples, "child_restarts_total") == {"w": 2.0, "x": 0.0}
    assert per_path(samples, "tree_health_status") == {}  # only while attached

    second = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], backoff=None)
    async with supervisor_tree(second, hooks=[ShutdownHook("b", fine, priority=30)]) as tree:
        metrics.attach(tree)
        # x is not in this tree: dropped. w's counter goes on from 2 (counters never fall).
        samples = scrape(metrics)
        assert paths_with_series(samples) == {"w"}
        assert per_path(samples, "child_restarts_total") == {"w": 2.0}
        assert per_path(samples, "child_up") == {"w": 1.0}
        await trio.sleep(1.5)
        assert per_path(scrape(metrics), "child_restarts_total") == {"w": 3.0}

    samples = scrape(metrics)
    # The hook durations describe the last shutdown; the error counters accumulate.
    assert per_path(samples, "shutdown_hook_duration_seconds") == {"supervisor": 0.0, "b": 0.0}
    assert per_path(samples, "shutdown_hook_errors_total") == {
        "supervisor": 0.0,
        "a": 1.0,
        "b": 0.0,
    }
    assert per_path(samples, "events_total")["shutdown_finished"] == 2.0


async def test_the_body_raising_or_cancelled_from_outside_still_records_the_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec("app", [ChildSpec("w", slow_stop(1.0))])
    metrics = TreeMetrics()

    async def body(tree: SupervisorTree) -> None:
        metrics.attach(tree)
        await trio.sleep(1.0)
        raise HookError("body failed")

    with pytest.raises(HookError, match=r"^body failed$"):  # unchanged, not in a group
        async with supervisor_tree(spec) as tree:
            await body(tree)
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.reason == "body raised HookError"
    samples = scrape(metrics)
    assert per_path(samples, "shutdown_duration_seconds") == {"": 1.0}
    assert per_path(samples, "shutdown_in_progress") == {"": 0.0}
    assert per_path(samples, "child_up") == {"w": 0.0}

    metrics = TreeMetrics()
    with trio.move_on_after(2.0) as outside:
        async with supervisor_tree(spec) as tree:
            metrics.attach(tree)
            await trio.sleep_forever()
    assert outside.cancelled_caught
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.reason == "cancelled from outside"
    samples = scrape(metrics)
    # The shutdown is shielded: the child's 1s of clean-up ran in full.
    assert per_path(samples, "shutdown_duration_seconds") == {"": 1.0}
    assert per_path(samples, "shutdown_hook_duration_seconds") == {"supervisor": 1.0}
    assert events_total(samples) == {
        "shutdown_started": 1.0,
        "terminated": 1.0,
        "hook_finished": 1.0,
        "shutdown_finished": 1.0,
    }


async def test_the_root_giving_up(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], max_restarts=0, backoff=None)
    metrics = TreeMetrics()

    async def body(tree: SupervisorTree) -> None:
        metrics.attach(tree)
        await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as caught:  # as itself, after the shutdown
        async with supervisor_tree(spec) as tree:
            await body(tree)
    assert caught.value.path == ""
    samples = scrape(metrics)
    assert per_path(samples, "supervisor_intensity_exceeded_total") == {"": 1.0}
    assert per_path(samples, "child_crashes_total") == {"w": 1.0}
    assert per_path(samples, "child_restarts_total") == {"w": 0.0}
    assert per_path(samples, "child_up") == {"w": 0.0}
    assert events_total(samples) == {
        "crashed": 1.0,
        "intensity_exceeded": 1.0,
        "shutdown_started": 1.0,
        "hook_finished": 1.0,
        "shutdown_finished": 1.0,
    }


# ----------------------------------------------------------------- attaching, detaching


async def test_attach_takes_in_the_children_as_they_are(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [
            SupervisorSpec("db", [ChildSpec("pool", crash_after(1.0, starts=2))], backoff=None),
            ChildSpec("off", sleeper()),
            ChildSpec("waiting", crash_after(1.0, starts=1), restart=Restart.TRANSIENT),
        ],
        backoff=Backoff(initial=2.0, jitter=0.0),
    )
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        await tree.terminate_child("off")
        await trio.sleep_until(2.5)  # db/pool crashed twice; "waiting" crashed, restarts at 3
        metrics.attach(tree)
        samples = scrape(metrics)
        # Restart counts start from the tree's; crashes from before are not known.
        assert per_path(samples, "child_restarts_total") == {
            "db": 0.0,
            "db/pool": 2.0,
            "off": 0.0,
            "waiting": 1.0,
        }
        assert per_path(samples, "child_crashes_total") == {
            "db": 0.0,
            "db/pool": 0.0,
            "off": 0.0,
            "waiting": 0.0,
        }
        assert per_path(samples, "child_up") == {
            "db": 1.0,
            "db/pool": 1.0,
            "off": 0.0,
            "waiting": 0.0,
        }
        assert events_total(samples) == {}
        assert per_path(samples, "tree_health_status") == {
            "healthy": 0.0,
            "degraded": 1.0,
            "unhealthy": 0.0,
        }
        assert per_path(samples, "tree_ready") == {"": 1.0}
        assert per_path(samples, "tree_live") == {"": 1.0}
        await trio.sleep_until(4.0)
        samples = scrape(metrics)
        assert per_path(samples, "child_up")["waiting"] == 1.0
        assert per_path(samples, "tree_health_status")["healthy"] == 1.0
        tree.shutdown()


async def test_detach_stops_the_updates(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], backoff=None)
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        detach = metrics.attach(tree)
        await trio.sleep_until(1.5)
        before = scrape(metrics)
        assert per_path(before, "child_restarts_total") == {"w": 1.0}
        detach()
        detach()  # harmless
        await trio.sleep_until(3.5)
        assert tree.info("w").restarts == 3
        after = scrape(metrics)
        health = "trio_supervise_tree_health_status"
        assert health not in after
        assert {
            k: v for k, v in before.items() if not k.startswith("trio_supervise_tree_")
        } == after

        # Attached again, the restart counter catches up with the tree; crashes missed
        # while detached stay missed.
        detach = metrics.attach(tree)
        samples = scrape(metrics)
        assert per_path(samples, "child_restarts_total") == {"w": 3.0}
        assert per_path(samples, "child_crashes_total") == {"w": 1.0}
        assert samples[health] == {"healthy": 1.0, "degraded": 0.0, "unhealthy": 0.0}
        tree.shutdown()


async def test_attaching_twice_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], backoff=None)
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        first_detach = metrics.attach(tree)
        with pytest.raises(
            RuntimeError,
            match=r"^TreeMetrics is already attached to this tree; attach it once \(events"
            r" would be counted twice\)$",
        ):
            metrics.attach(tree)
        async with supervisor_tree(SupervisorSpec("other", [])) as other:
            with pytest.raises(
                RuntimeError,
                match=r"^TreeMetrics is already attached to another tree; call the function"
                r" attach\(\) returned to detach it first, or make one TreeMetrics per tree$",
            ):
                metrics.attach(other)
        first_detach()
        metrics.attach(tree)
        first_detach()  # an old detach function leaves the new attachment alone
        await trio.sleep_until(1.5)
        samples = scrape(metrics)
        assert per_path(samples, "child_crashes_total") == {"w": 1.0}
        assert per_path(samples, "events_total")["crashed"] == 1.0
        tree.shutdown()


async def test_a_failure_inside_the_listener_is_logged_not_raised(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    spec = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0, starts=1))], backoff=None)
    metrics = TreeMetrics()
    async with supervisor_tree(spec) as tree:
        metrics.attach(tree)
        crashes = metrics._series["w"].crashes

        def broken(amount: float = 1) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(crashes, "inc", broken)
        await trio.sleep_until(1.5)
        # Supervision went on, and so did the metrics of the later events.
        assert tree.info("w").restarts == 1
        assert per_path(scrape(metrics), "child_up") == {"w": 1.0}
        assert per_path(scrape(metrics), "child_restarts_total") == {"w": 1.0}
        tree.shutdown()

    failures = [r for r in caplog.records if r.name == "trio_supervise.metrics"]
    assert [(r.levelno, r.getMessage()) for r in failures] == [
        (
            logging.ERROR,
            "TreeMetrics failed to record CRASHED w; the metrics may be off from now on",
        )
    ]
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], OSError)
    # Caught by TreeMetrics itself: the tree's guard for broken listeners never fired.
    assert not [r for r in caplog.records if vars(r).get("kind") == "LISTENER_FAILED"]


# ---------------------------------------------------------------------------- registry


def family_names(registry: CollectorRegistry) -> set[str]:
    return {
        family.name for family in text_string_to_metric_families(generate_latest(registry).decode())
    }


async def test_the_registry_is_private() -> None:
    # Names, not values: the global registry has process metrics that change as we run.
    global_before = family_names(REGISTRY)
    metrics = TreeMetrics()
    other = TreeMetrics()
    assert isinstance(metrics.registry, CollectorRegistry)
    assert metrics.registry is not REGISTRY
    assert metrics.registry is not other.registry
    assert family_names(REGISTRY) == global_before
    assert not [name for name in global_before if name.startswith("trio_supervise")]
    body, content_type = metrics.exposition()
    assert content_type == CONTENT_TYPE_LATEST == "text/plain; version=1.0.0; charset=utf-8"
    # The registry as prometheus-client writes it, less the counters' _created series
    # (issue 10, item 12: every counter came twice).
    assert b"_created" in generate_latest(metrics.registry)
    assert b"_created" not in body
    kept = [
        line for line in generate_latest(metrics.registry).splitlines() if b"_created" not in line
    ]
    assert body.splitlines() == kept
    assert family_names(metrics.registry) == {
        f"trio_supervise_{name}"
        for name in (
            "child_up",
            "child_restarts",
            "child_crashes",
            "child_stop_timeouts",
            "supervisor_intensity_exceeded",
            "events",
            "shutdown_in_progress",
            "shutdown_duration_seconds",
            "shutdown_hook_duration_seconds",
            "shutdown_hook_errors",
            "events_created",  # the creation times of its series, made at once
        )
    }  # the tree's health comes only while attached


async def test_a_shared_registry_needs_its_own_namespace() -> None:
    registry = CollectorRegistry()
    metrics = TreeMetrics(registry)
    assert metrics.registry is registry
    alone = generate_latest(registry)
    with pytest.raises(
        ValueError,
        match=r"^TreeMetrics: the registry already holds metrics named"
        r" \['trio_supervise_child_up'\]; give each TreeMetrics its own registry \(the default\)"
        r" or its own namespace$",
    ):
        TreeMetrics(registry)
    assert generate_latest(registry) == alone  # nothing left half registered
    mine = TreeMetrics(registry, namespace="my_app")
    names = family_names(registry)
    assert {"my_app_child_up", "my_app_child_restarts", "trio_supervise_child_up"} <= names
    assert family_names(mine.registry) == names


async def test_bad_arguments() -> None:
    with pytest.raises(
        TypeError,
        match=r"^TreeMetrics: registry must be a prometheus_client.CollectorRegistry or None"
        r" \(got 'nope'\)$",
    ):
        TreeMetrics("nope")  # type: ignore[arg-type]
    for namespace in ("bad-name", "", "1st", 3):
        with pytest.raises(
            ValueError,
            match=r"^TreeMetrics: namespace must match \[a-zA-Z_\]\[a-zA-Z0-9_\]\* \(got "
            + f"{namespace!r}"
            + r"\); use letters, digits and underscores, e.g. 'my_service'$",
        ):
            TreeMetrics(namespace=namespace)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^TreeMetrics.attach takes the tree from 'async with supervisor_tree\(spec\) as"
        r" tree' \(got None\)$",
    ):
        TreeMetrics().attach(None)  # type: ignore[arg-type]


def test_import_without_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "trio_supervise.integrations.metrics")
    with pytest.raises(
        ImportError,
        match=r"^trio_supervise.integrations.metrics needs prometheus-client, which is not"
        r" installed; install the extra: pip install 'trio-supervise\[metrics\]'$",
    ):
        importlib.import_module("trio_supervise.integrations.metrics")


async def test_a_supervisor_started_after_attach_has_its_intensity_series(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 10, item 12: attached by the first child, as the demo does, the nested
    # supervisors that started later had no intensity series until they gave up.
    metrics = TreeMetrics()

    async def attach() -> None:
        metrics.attach(current_tree())

    workers = SupervisorSpec("workers", [SupervisorSpec("flaky", [ChildSpec("w", sleeper())])])
    spec = SupervisorSpec("app", [ChildSpec("metrics", attach, restart=Restart.TEMPORARY), workers])
    async with supervisor_tree(spec):
        await trio.sleep(1)
        samples = scrape(metrics)
        assert per_path(samples, "supervisor_intensity_exceeded_total") == {
            "": 0.0,
            "workers": 0.0,
            "workers/flaky": 0.0,
        }


async def test_a_singleton_is_up_only_while_it_holds_its_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = MemoryLock()
    metrics = TreeMetrics()

    async def attach() -> None:
        metrics.attach(current_tree())

    spec = SupervisorSpec(
        "app",
        [
            ChildSpec("attach", attach, restart=Restart.TEMPORARY),
            ChildSpec.singleton("s", sleeper(), lock=lock),
        ],
    )
    elsewhere = lock.hold("elsewhere")
    await elsewhere.__aenter__()
    async with supervisor_tree(spec) as tree, trio.open_nursery() as nursery:
        await trio.sleep(1)
        assert per_path(scrape(metrics), "child_up")["s"] == 0.0  # waiting
        await elsewhere.__aexit__(None, None, None)
        await wait_state(tree, "s", ChildState.RUNNING)
        assert per_path(scrape(metrics), "child_up")["s"] == 1.0

        async def take_over() -> None:
            async with lock.hold("other"):
                await trio.sleep_forever()

        nursery.start_soon(take_over)
        await trio.sleep(1)
        lock.lose()
        await wait_state(tree, "s", ChildState.STARTING)
        await trio.sleep(1)
        samples = scrape(metrics)
        assert per_path(samples, "child_up")["s"] == 0.0
        assert per_path(samples, "child_restarts_total")["s"] == 0.0
        assert events_total(samples)["lock_lost"] == 1.0
        nursery.cancel_scope.cancel()
