"""A tree for the observer benchmark: a pool of N sleeping children, a child that crashes
every P seconds, and the observer on 127.0.0.1:PORT.

    python _observer_program.py N P PORT     # prints "ready URL" once it serves
"""

from __future__ import annotations

import sys

import trio

from trio_supervise import Backoff, ChildSpec, SupervisorSpec, supervisor_tree
from trio_supervise.integrations.http import HTTPServer
from trio_supervise.integrations.observer import observer_app


async def main(children: int, period: float, port: int) -> None:
    async def crasher() -> None:
        await trio.sleep(period)
        raise RuntimeError("on schedule")

    async def sleeper() -> None:
        await trio.sleep_forever()

    server = HTTPServer(observer_app(), host="127.0.0.1", port=port)
    pool = SupervisorSpec("pool", [ChildSpec(f"w{i}", sleeper) for i in range(children)])
    spec = SupervisorSpec(
        "bench",
        [server.child_spec("observer"), ChildSpec("crasher", crasher), pool],
        backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0),
        max_restarts=10**6,
        max_seconds=1.0,
    )
    async with supervisor_tree(spec, handle_signals=True):
        print(f"ready {server.bound[0]}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
