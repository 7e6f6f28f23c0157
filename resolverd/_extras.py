"""Optional dependencies: a command that needs one that is missing says which extra to install.

A missing extra is a `ConfigError` (exit 78): the installation, not the input, needs fixing,
and under systemd that exit code stops the restart loop.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError


def require(extra: str, *modules: str, needed_by: str) -> None:
    """Import `modules`, or raise ConfigError naming the `extra` that installs them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # not installed, or a library it loads is missing
            raise ConfigError(
                f"{needed_by} needs {module}: install resolverd[{extra}] ({exc})"
            ) from exc
