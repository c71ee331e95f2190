"""routebandit's edge: settings, the FastAPI app, the upstream client and the CLI.

The names below are imported on first use, so that ``routebandit --help`` does not pay
for FastAPI and the app when it only prints help.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Settings", "SettingsError", "create_app"]
_WHERE = {"Settings": "serving.settings", "SettingsError": "serving.settings",
          "create_app": "serving.app"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
