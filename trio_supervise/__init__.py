"""Supervision trees and graceful shutdown for Trio.

Everything public is re-exported here; the modules behind it are private.
"""

from . import _util
from ._context import ChildContext as ChildContext
from ._context import ChildState as ChildState
from ._context import current_child as current_child
from ._errors import ChildNotFoundError as ChildNotFoundError
from ._errors import ChildStartError as ChildStartError
from ._errors import HealthCheckFailed as HealthCheckFailed
from ._errors import ProcessExited as ProcessExited
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import SpecError as SpecError
from ._errors import SupervisionError as SupervisionError
from ._events import Event as Event
from ._events import EventKind as EventKind
from ._events import EventStream as EventStream
from ._health import ChildHealth as ChildHealth
from ._health import HealthReport as HealthReport
from ._process_spec import Ready as Ready
from ._run import HARD_EXIT_CODE as HARD_EXIT_CODE
from ._run import HARD_EXIT_GRACE as HARD_EXIT_GRACE
from ._run import run as run
from ._run import serve as serve
from ._shutdown import Band as Band
from ._shutdown import DrainDelay as DrainDelay
from ._shutdown import HookResult as HookResult
from ._shutdown import ShutdownHook as ShutdownHook
from ._shutdown import ShutdownReport as ShutdownReport
from ._singleton import Lock as Lock
from ._singleton import LockLease as LockLease
from ._spec import AutoShutdown as AutoShutdown
from ._spec import Backoff as Backoff
from ._spec import ChildSpec as ChildSpec
from ._spec import HealthCheck as HealthCheck
from ._spec import HealthStatus as HealthStatus
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._spec import SupervisorSpec as SupervisorSpec
from ._systemd import SystemdNotifier as SystemdNotifier
from ._tree import ChildCounts as ChildCounts
from ._tree import ChildInfo as ChildInfo
from ._tree import SupervisorTree as SupervisorTree
from ._tree import current_tree as current_tree
from ._tree import supervisor_tree as supervisor_tree
from ._version import __version__ as __version__

_util.fixup_module_metadata(__name__, globals())
