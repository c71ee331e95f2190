"""The gateway's parts, made from its settings (``settings.gateway``: the nested
:class:`serving.settings.GatewaySettings`, ``ROUTEBANDIT_GATEWAY__<NAME>``).

Validated at start-up with the rest of the settings; these functions turn them into the
gateway's reliability configuration, the upstream timeouts and the egress policy.
"""

from __future__ import annotations

from serving.egress import EgressPolicy, Resolver, parse_allow, resolve_system
from serving.gateway import GatewayConfig
from serving.settings import GatewaySettings
from serving.upstream import Timeouts


def gateway_config(gs: GatewaySettings) -> GatewayConfig:
    """The gateway's reliability knobs.

    >>> gateway_config(GatewaySettings(max_attempts=2)).max_attempts
    2
    """
    return GatewayConfig(
        max_attempts=gs.max_attempts, deadline_s=gs.deadline_s,
        first_byte_timeout_s=gs.first_byte_timeout_s,
        stream_deadline_s=gs.stream_deadline_s,
        max_response_bytes=gs.max_response_bytes,
        cooldown_failures=gs.cooldown_failures, cooldown_s=gs.cooldown_s,
        cascade_profiles=frozenset(gs.cascade_profiles), cache=gs.cache,
        cache_max_entries=gs.cache_max_entries, cache_ttl_s=gs.cache_ttl_s,
        default_quality=gs.default_quality,
        default_quality_delay_s=gs.default_quality_delay_s,
        failure_quality=gs.failure_quality,
        outcome_interval_s=gs.outcome_interval_s,
        max_choices=gs.max_choices,
    )


def upstream_timeouts(gs: GatewaySettings) -> Timeouts:
    """Connecting to an upstream, and the longest silence of an answer once begun."""
    return Timeouts(connect=gs.connect_timeout_s, read=gs.read_timeout_s)


def egress_policy(gs: GatewaySettings, *, development: bool, database_url: str | None,
                  resolver: Resolver | None = None) -> EgressPolicy:
    """The upstream egress policy (development mode also admits loopback)."""
    return EgressPolicy(allow=parse_allow(gs.upstream_allow), loopback=development,
                        key_envs=gs.api_key_envs, database_url=database_url,
                        resolver=resolver or resolve_system)
