"""routebandit's memory: decisions, outcomes and feedback, training from logs, MLflow.

Importing this package is cheap: mlflow is only imported inside :mod:`feedback.tracking`'s
functions, when a version is actually logged or loaded.
"""

from feedback.errors import StoreError
from feedback.records import LoggedExample
from feedback.store import Store
from feedback.tracking import Tracker, resolve_tracking_uri

__all__ = ["LoggedExample", "Store", "StoreError", "Tracker", "resolve_tracking_uri"]
