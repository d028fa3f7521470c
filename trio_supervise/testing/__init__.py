"""Helpers for testing supervision trees in virtual time.

Fake children with a known behaviour, a lock shared by the trees of one process, an
event recorder with assertions on event sequences, and waits for a tree to settle. They
all work under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``).

This subpackage is not imported by ``import trio_supervise``.
"""

from .. import _util
from ._fakes import FakeCrash as FakeCrash
from ._fakes import FakeService as FakeService
from ._fakes import ServiceFactory as ServiceFactory
from ._fakes import crash_after as crash_after
from ._fakes import fail_start as fail_start
from ._fakes import flaky as flaky
from ._fakes import refuse_stop as refuse_stop
from ._fakes import return_after as return_after
from ._fakes import sleeper as sleeper
from ._fakes import slow_start as slow_start
from ._fakes import slow_stop as slow_stop
from ._memory_lock import MemoryLock as MemoryLock
from ._recorder import EventRecorder as EventRecorder
from ._recorder import Expected as Expected
from ._recorder import wait_idle as wait_idle
from ._recorder import wait_stable as wait_stable
from ._recorder import wait_state as wait_state

_util.fixup_module_metadata(__name__, globals())
