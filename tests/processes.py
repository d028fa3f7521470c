"""Helpers for the tests that run real processes: signal storms, imports without an extra."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def signal_storm(process: subprocess.Popen[str], count: int = 20, every: float = 0.01) -> None:
    """Send ``count`` SIGTERMs ``every`` seconds apart, until the process has exited."""
    for _ in range(count):
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        time.sleep(every)


def import_message_without(module: str, dependency: str) -> str:
    """What importing ``module`` in a fresh interpreter says when ``dependency`` is missing."""
    code = (
        "import sys\n"
        f"sys.modules[{dependency!r}] = None  # as if it were not installed\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stderr == "", result.stderr
    return result.stdout
