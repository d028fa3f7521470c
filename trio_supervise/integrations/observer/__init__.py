"""The observer: a live web view of a supervision tree, and its JSON API (extra ``http``).

``observer_app(tree, token=None)`` is an ASGI application: serve it with ``HTTPServer`` (or
mount it beside ``health_app``); ``trio-supervise run --observer HOST:PORT`` and the demo's
``--observer-port`` serve it for you. See ``observer_app`` for the routes.
"""

from ..._extras import missing_extra

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("trio_supervise.integrations.observer", "starlette", "http") from exc

from ._app import observer_app as observer_app

__all__ = ["observer_app"]
