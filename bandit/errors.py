"""One error hierarchy for the decision core.

Foreign errors (YAML, Vowpal Wabbit) are translated into these where they enter, so the
service maps exactly one family of exceptions to HTTP status codes.
"""

from __future__ import annotations


class RouteBanditError(Exception):
    """Base class of every error routebandit raises on purpose."""


class CatalogError(RouteBanditError, ValueError):
    """The model catalog is malformed; the message names the bad field."""


class RequestError(RouteBanditError, ValueError):
    """A routing request is malformed (bad messages, bad weights, bad sizes)."""


class NoEligibleModelError(RouteBanditError):
    """No model in the catalog satisfies the request's hard constraints.

    ``reasons`` says why for each model; ``needs`` names what the request asked that no
    allowed model offers (capabilities, ``max_output_tokens`` or ``context_window``),
    empty when each model fails for its own reason.
    """

    def __init__(self, message: str, *, reasons: dict[str, str],
                 needs: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = dict(reasons)
        self.needs = tuple(needs)


class PolicyError(RouteBanditError):
    """The policy could not decide, learn, save or load (wraps Vowpal Wabbit errors)."""
