"""routebandit's decision core: features, catalog, reward and the VW contextual bandit.

Pure decision logic: no environment reading, no database, no HTTP, no MLflow.
"""

from bandit.catalog import Catalog, ModelSpec, example_catalog_path
from bandit.constraints import eligible_models
from bandit.decision import Action, Decision
from bandit.errors import (
    CatalogError,
    NoEligibleModelError,
    PolicyError,
    RequestError,
    RouteBanditError,
)
from bandit.estimates import Estimates
from bandit.features import FEATURE_VERSION, Context, Request, featurize, parse_request
from bandit.policy import EXPLORATIONS, Policy, PolicyConfig
from bandit.reward import RewardWeights, penalty, reward

__all__ = [
    "Action",
    "Catalog",
    "CatalogError",
    "Context",
    "Decision",
    "EXPLORATIONS",
    "Estimates",
    "FEATURE_VERSION",
    "ModelSpec",
    "NoEligibleModelError",
    "Policy",
    "PolicyConfig",
    "PolicyError",
    "Request",
    "RequestError",
    "RewardWeights",
    "RouteBanditError",
    "eligible_models",
    "example_catalog_path",
    "featurize",
    "parse_request",
    "penalty",
    "reward",
]
