"""The program of ``bench_process``: every supervisor runs 20 copies of this script.

``python -I -S _process_program.py FIFO NAME MODE``: reports ``NAME PID`` (``NAME PID
GRANDCHILD_PID`` in the ``grandchild`` mode) as one line written to the benchmark's FIFO
(atomic: far below ``PIPE_BUF``), then sleeps for ever. Modes:

* ``plain``: the default SIGTERM disposition (dies at once);
* ``ignore``: ignores SIGTERM (only SIGKILL ends it), set before it reports;
* ``grandchild``: first spawns one ``sleep`` in its own process group (a grandchild of the
  supervisor), then reports both pids.

Standard library only, and nothing imported but built-in modules: it starts in a few ms.
"""

import os
import signal
import sys
import time


def main() -> None:
    fifo, name, mode = sys.argv[1:4]
    if mode == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Opened first: without the benchmark reading it, this fails and nothing is spawned (a
    # supervisor that outlived the benchmark restarts it in a loop, and leaves a grandchild
    # behind at each crash if it does not kill the group).
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    line = f"{name} {os.getpid()}"
    if mode == "grandchild":
        line += f" {os.posix_spawn('/bin/sleep', ['sleep', '3600'], os.environ)}"
    os.write(fd, f"{line}\n".encode())
    os.close(fd)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
