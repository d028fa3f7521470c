"""One child run's mechanism: its task, the ordered stop chain, the pool's stop at once."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_supervise import ChildSpec, EventKind, SupervisorSpec, supervisor_tree
from trio_supervise.testing import ServiceFactory, slow_stop


def stop_order(history: list[object], prefix: str = "") -> list[tuple[str, float]]:
    return [
        (e.path, e.time)  # type: ignore[attr-defined]
        for e in history
        if e.kind is EventKind.TERMINATED  # type: ignore[attr-defined]
        and e.path.startswith(prefix)  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("concurrent_stop", [False, True])
async def test_a_service_with_stop_between_plain_children_stops_them_all(
    autojump_clock: trio.testing.MockClock, concurrent_stop: bool
) -> None:
    # A service with stop() is asked by the supervisor's own task; the plain runs around it
    # hand the stop on by themselves. Before the fix the service's exit handed the stop on
    # as well, the chain stepped past "before", and the shutdown waited for ever.
    service = ServiceFactory(stop_takes=1.0)
    pool = SupervisorSpec(
        "pool",
        [
            ChildSpec("before", slow_stop(0.5)),
            ChildSpec.service("svc", service),
            ChildSpec("after", slow_stop(0.25)),
        ],
        concurrent_stop=concurrent_stop,
    )
    with trio.fail_after(60):
        async with supervisor_tree(SupervisorSpec("app", [pool])) as tree:
            await trio.sleep(1)
    stopped = stop_order(list(tree.history), "pool/")
    if concurrent_stop:
        assert sorted(stopped) == [("pool/after", 1.25), ("pool/before", 1.5), ("pool/svc", 2.0)]
    else:
        assert stopped == [("pool/after", 1.25), ("pool/svc", 2.25), ("pool/before", 2.75)]
    assert service.made[0].calls[-2:] == ["stop", "stopped"]
