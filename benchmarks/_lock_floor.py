"""The floor of a lock handover: a bare client of the lock, no supervisor, no polling.

    python _lock_floor.py hold postgres DSN   # takes the lock, says "holding"; a line on
    python _lock_floor.py hold file PATH      #   stdin releases it ("released <time>")
    python _lock_floor.py wait postgres DSN   # says "waiting", blocks until it has the lock,
                                              #   then says "acquired <time>"
    python _lock_floor.py wait file PATH

PostgreSQL waits in the server (``pg_advisory_lock``), a file in the kernel (``flock``):
both are granted the moment the holder lets go or dies, which is as fast as a handover
can be. Times are ``time.time()``.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from trio_supervise.integrations.locks import advisory_key

KEY = advisory_key("benchmark-floor")


def main() -> None:
    role, backend, where = sys.argv[1:]
    if role == "wait":
        print("waiting", flush=True)
    if backend == "postgres":
        import psycopg

        connection = psycopg.connect(where, autocommit=True)
        connection.execute("SELECT pg_advisory_lock(%s)", (KEY,))
    else:
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    if role == "wait":
        print(f"acquired {time.time()!r}", flush=True)
        return
    print("holding", flush=True)
    sys.stdin.readline()
    if backend == "postgres":
        connection.execute("SELECT pg_advisory_unlock(%s)", (KEY,))
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    print(f"released {time.time()!r}", flush=True)


if __name__ == "__main__":
    main()
