"""The guardian: kills the process groups of a supervising process that died.

Run as a script (``python -I -S _guardian.py``), never imported by the supervisor: it needs
only the standard library and starts in milliseconds. Its stdin is a pipe from the
supervising process, which writes ``+PGID`` when it starts a process group and ``-PGID``
when that group is gone. End of file means the supervising process is gone, however it died
(the kernel closes the pipe even after SIGKILL): every group still listed gets SIGKILL.

It runs in a session of its own, so a signal to the supervisor's process group or terminal
does not take it down with the supervisor.
"""

import contextlib
import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        op, number = line[:1], line[1:].strip()
        if not number.isdigit():
            continue
        if op == b"+":
            groups.add(int(number))
        elif op == b"-":
            groups.discard(int(number))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    main()
