"""A migrated MLflow SQLite store, created once per test process and copied per use.

Creating an MLflow database runs its Alembic migrations (~7 s); a copy takes
milliseconds. The template holds only the migrated schema and MLflow's default
experiment, which routebandit never writes to.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _template() -> Path:
    from mlflow import MlflowClient

    root = Path(tempfile.mkdtemp(prefix="routebandit-mlflow-template-"))
    atexit.register(shutil.rmtree, root, True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return root / "mlflow.db"


def fresh_tracking_uri(directory: Path) -> str:
    """A ready tracking URI ``sqlite:///<directory>/mlflow.db`` (artifacts beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"
