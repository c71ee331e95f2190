"""The one internal request and the one outcome every front door shares.

Each door (``/v1/route``, OpenAI's Chat Completions and Responses, Anthropic's Messages)
translates what its client sent into a :class:`RouteRequest`, the routing-relevant
fields the router reads; each upstream call, whatever door it came in by and whatever
API the upstream speaks, ends as one :class:`Outcome` stored for its decision. So the
router (:class:`serving.service.RouterService`) learns the same from a request whichever
door it came in by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feedback.records import POLICY


@dataclass(frozen=True)
class RouteRequest:
    """A routing request.

    Give ``messages`` (OpenAI style) or ``prompt``. ``allow`` restricts the models,
    ``profile`` names reward weights and ``weights`` overrides some of them.
    ``force_model`` skips the policy (pass-through): the decision is logged with
    probability 1 and ``kind`` (``forced`` unless a door says ``passthrough``,
    ``failover`` or ``cascade``) so off-policy evaluation can tell it apart. ``tenant``
    is the authenticated tenant (``metadata.tenant`` otherwise). ``reasoning_effort``
    and ``"audio"`` among ``modalities`` need a model with that capability.

    >>> RouteRequest(prompt="hi").kind
    'policy'
    """

    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    tools: Sequence[Any] | None = None
    response_format: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    profile: str | None = None
    weights: Mapping[str, float] | None = None
    allow: tuple[str, ...] | None = None
    force_model: str | None = None
    kind: str = POLICY
    tenant: str | None = None
    user_key: str | None = None
    reasoning_effort: str | None = None
    modalities: Sequence[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one upstream call did, as stored for its decision.

    ``status`` is ``ok``, ``error``, ``rejected``, ``throttled``, ``unreachable``,
    ``client_error`` or ``cancelled`` (docs/gateway.md says what each teaches the
    router). A caller that measured less leaves the rest None.

    >>> Outcome(model="m", latency_ms=120.0).status
    'ok'
    """

    model: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None
    status: str = "ok"
    error: str | None = None
