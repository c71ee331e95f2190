"""Errors of the memory layer, in the one routebandit hierarchy.

Database driver errors are translated into these where they enter (in ``Store``), so
the service maps exactly one family of exceptions to HTTP status codes.
"""

from __future__ import annotations

from bandit.errors import RouteBanditError


class StoreError(RouteBanditError):
    """The database could not be reached, migrated or written."""


class StoreUnavailableError(StoreError):
    """The database did not answer (down, locked, out of connections): try again later."""


class RecordRefusedError(StoreError):
    """The database refused one record while it took others: the record was set aside
    in ``dead_letters`` with the error, and was not stored."""


class UnknownDecisionError(StoreError, LookupError):
    """No decision with this id is visible to the caller (also across tenants)."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(f"decision_id: no decision {decision_id!r}")
        self.decision_id = decision_id


class FeedbackConflictError(StoreError):
    """Feedback for this decision was already recorded with different values."""

    def __init__(self, decision_id: str, field: str) -> None:
        super().__init__(
            f"{field}: feedback for decision {decision_id!r} was already recorded with a "
            f"different {field}; feedback is accepted once per decision"
        )
        self.decision_id = decision_id
        self.field = field
