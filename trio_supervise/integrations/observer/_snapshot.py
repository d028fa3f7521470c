"""The tree, its events and its last shutdown as JSON, for the observer's API and page.

Nothing secret goes out: a child's spec (its target's arguments, a process's command and
environment, a DSN) is never read; errors are their type and message, which the
integrations keep free of passwords (a DSN is shown redacted).
"""

from __future__ import annotations

import traceback
from typing import Any

from ..._errors import SupervisionError
from ..._events import Event
from ..._shutdown import ShutdownReport
from ..._tree import ChildInfo, SupervisorTree


def error_text(error: BaseException | None) -> str | None:
    """``"Type: message"``, or None."""
    if error is None:
        return None
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def error_traceback(error: BaseException | None) -> str | None:
    """The whole traceback of ``error`` (with its causes), or None."""
    if error is None:
        return None
    return "".join(traceback.format_exception(error))


def node(tree: SupervisorTree, info: ChildInfo) -> dict[str, Any]:
    """One child (or the root, ``""``) as a JSON object, without its children."""
    if info.path:
        return node_with(info, tree._child_health(info.path).status.value)
    return node_with(info, tree.health().status.value)


def children_of(tree: SupervisorTree, info: ChildInfo) -> list[ChildInfo]:
    """A supervisor's children in start order; none for a worker or one not running."""
    if info.kind != "supervisor":
        return []
    try:
        return tree.children(info.path)
    except SupervisionError:  # not started yet, or restarting: no children to show
        return []


def tree_json(tree: SupervisorTree, path: str = "") -> dict[str, Any]:
    """The tree below ``path`` as nested objects, each with its ``children``."""
    health = tree.health()
    statuses = {child: entry.status.value for child, entry in health.children.items()}

    def visit(info: ChildInfo) -> dict[str, Any]:
        entry = node_with(info, statuses.get(info.path, health.status.value))
        entry["children"] = [visit(child) for child in children_of(tree, info)]
        return entry

    return visit(tree.info(path))


def node_with(info: ChildInfo, health: str) -> dict[str, Any]:
    """``node`` with the health given (read from one report for a whole tree)."""
    return {
        "path": info.path,
        "name": info.name,
        "kind": info.kind,
        "state": info.state.value,
        "restarts": info.restarts,
        "health": health,
        "last_error": error_text(info.last_error),
        "started_at": info.started_at,
        "restart_at": info.restart_at,
        "pid": info.pid,
        "output_tail": list(info.output_tail),
        "status": info.status,
        "lock_holder": info.lock_holder,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "kind": event.kind.value,
        "path": event.path,
        "time": event.time,
        "restarts": event.restarts,
        "error": error_text(event.error),
        "detail": event.detail,
    }


def shutdown_json(report: ShutdownReport | None) -> dict[str, Any] | None:
    """The last shutdown's report, each hook with its band, start, duration and status."""
    if report is None:
        return None
    return {
        "reason": report.reason,
        "started": report.started,
        "duration": report.duration,
        "forced": report.forced,
        "deadline_exceeded": report.deadline_exceeded,
        "ok": report.ok,
        "hooks": [
            {
                "name": hook.name,
                "priority": hook.priority,
                "band": hook.priority // 10,
                "status": hook.status,
                "started": hook.started,
                "duration": hook.duration,
                "error": error_text(hook.error),
            }
            for hook in report.hooks
        ],
    }
