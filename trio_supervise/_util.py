"""Small helpers shared by the public packages."""

from __future__ import annotations

from typing import Any


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make the public names of ``namespace`` say they live in ``module_name``.

    Tracebacks and reprs then show ``trio_supervise.ChildSpec``, not the private module.
    """
    private_prefix = f"{module_name}._"
    for name, value in namespace.items():
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(private_prefix):
            value.__module__ = module_name
