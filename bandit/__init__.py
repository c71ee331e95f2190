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
from bandit.exploration import epsilon_greedy, greedy, softmax, squarecb
from bandit.features import (
    FEATURE_VERSION,
    KEYED_FEATURE_VERSION,
    Context,
    Request,
    featurize,
    key_fingerprint,
    parse_request,
)
from bandit.ope import Estimate, doubly_robust, ips, snips
from bandit.outcomes import OutcomeTable, OutcomeTableError, load_outcomes
from bandit.policy import EXPLORATIONS, Policy, PolicyConfig
from bandit.replay import ReplayConfig, ReplayResult, replay
from bandit.reward import RewardWeights, penalty, reward

__all__ = [
    "Action",
    "Catalog",
    "CatalogError",
    "Context",
    "Decision",
    "EXPLORATIONS",
    "Estimate",
    "Estimates",
    "FEATURE_VERSION",
    "KEYED_FEATURE_VERSION",
    "ModelSpec",
    "NoEligibleModelError",
    "OutcomeTable",
    "OutcomeTableError",
    "Policy",
    "PolicyConfig",
    "PolicyError",
    "ReplayConfig",
    "ReplayResult",
    "Request",
    "RequestError",
    "RewardWeights",
    "RouteBanditError",
    "doubly_robust",
    "eligible_models",
    "epsilon_greedy",
    "example_catalog_path",
    "featurize",
    "greedy",
    "ips",
    "key_fingerprint",
    "load_outcomes",
    "parse_request",
    "penalty",
    "replay",
    "reward",
    "snips",
    "softmax",
    "squarecb",
]
