"""The one message for an optional dependency that is not installed."""

from __future__ import annotations


def missing_extra(what: str, needs: str, extra: str) -> ImportError:
    """The ``ImportError`` to raise (``from`` the original) when an extra is not installed.

    Args:
      what: what needs it, e.g. ``"trio_supervise.integrations.http"``.
      needs: the distribution it needs, e.g. ``"hypercorn"``.
      extra: the extra that installs it, e.g. ``"http"``.
    """
    return ImportError(
        f"{what} needs {needs}, which is not installed; install the extra:"
        f" pip install 'trio-supervise[{extra}]'"
    )
