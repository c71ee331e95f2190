"""Settings of the OpenAI-compatible gateway (``ROUTEBANDIT_GATEWAY_*``).

Validated at start-up like the service's settings. The app's lifespan uses
``settings.gateway`` when the service settings carry one, else reads these from the
environment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.egress import DEFAULT_KEY_ENVS, EgressPolicy, Resolver, parse_allow, resolve_system
from serving.gateway import GatewayConfig
from serving.settings import SettingsError
from serving.upstream import Timeouts


class GatewaySettings(BaseSettings):
    """Failover, cooldown, cascade, cache and default-quality knobs of the gateway."""

    model_config = SettingsConfigDict(env_prefix="ROUTEBANDIT_GATEWAY_", extra="forbid",
                                      frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10,
                              description="Models tried per request.")
    deadline_s: float = Field(
        default=60.0, gt=0,
        description="The whole request, body reads included, until the client has its "
        "answer (a stream: its first chunk); each attempt may use its share of what is left.")
    first_byte_timeout_s: float = Field(
        default=5.0, gt=0,
        description="Until a stream's first chunk, per attempt (a catalog model's "
        "first_byte_timeout_s overrides it); then failover.")
    read_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Longest silence between two bytes of an answer once it has begun.")
    stream_deadline_s: float = Field(
        default=600.0, gt=0, description="A stream's whole life, from the request.")
    connect_timeout_s: float = Field(default=5.0, gt=0,
                                     description="Connecting to an upstream.")
    max_response_bytes: int = Field(
        default=16 * 2**20, ge=1024,
        description="Largest answer read from an upstream (bytes); past it the attempt fails.")
    cooldown_failures: int = Field(default=3, ge=1,
                                   description="Consecutive failures to cool down.")
    cooldown_s: float = Field(default=30.0, ge=0,
                              description="First cooldown; doubles per failed probe.")
    cascade_profiles: frozenset[str] = Field(
        default=frozenset(), description="Profiles (auto:<profile>) served in cascade mode.")
    cache: bool = Field(default=False,
                        description="Exact-match cache for temperature-0 requests.")
    cache_max_entries: int = Field(default=1024, ge=1)
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    default_quality: float | None = Field(
        default=None, ge=0, le=1,
        description="Quality applied when no feedback arrives in time.")
    default_quality_delay_s: float = Field(default=600.0, gt=0)
    failure_quality: float | None = Field(
        default=0.0, ge=0, le=1, description="Quality fed back for a failed or rejected call.")
    outcome_interval_s: float = Field(
        default=0.1, ge=0, le=5,
        description="Outcomes are recorded in batches this often (0: each at once).")
    max_choices: int = Field(
        default=8, ge=1, le=128,
        description="Largest `n` (choices per request) forwarded; each is a paid answer.")
    max_connections: int = Field(default=512, ge=1,
                                 description="Upstream connection pool size.")
    transport: Literal["httpx", "aiohttp"] = Field(
        default="aiohttp",
        description="What sends upstream requests (aiohttp: a third of httpx's CPU per call).")
    client_shards: int = Field(
        default=32, ge=1, le=128,
        description="httpx clients the pool is split across (transport httpx only).")
    upstream_allow: tuple[str, ...] = Field(
        default=(),
        description="Hosts and CIDRs upstreams may be at besides public addresses (e.g. "
        '["10.0.0.0/8", "vllm.internal"]); a cloud metadata address only if listed exactly.')
    api_key_envs: tuple[str, ...] = Field(
        default=DEFAULT_KEY_ENVS,
        description="Glob patterns of the variables api_key_env may name (never ROUTEBANDIT_*, "
        "never one holding the database URL).")

    @field_validator("upstream_allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_allow(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("api_key_envs")
    @classmethod
    def _key_envs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in value):
            raise ValueError("patterns must be non-empty")
        return value

    def config(self) -> GatewayConfig:
        return GatewayConfig(
            max_attempts=self.max_attempts, deadline_s=self.deadline_s,
            first_byte_timeout_s=self.first_byte_timeout_s,
            stream_deadline_s=self.stream_deadline_s,
            max_response_bytes=self.max_response_bytes,
            cooldown_failures=self.cooldown_failures, cooldown_s=self.cooldown_s,
            cascade_profiles=frozenset(self.cascade_profiles), cache=self.cache,
            cache_max_entries=self.cache_max_entries, cache_ttl_s=self.cache_ttl_s,
            default_quality=self.default_quality,
            default_quality_delay_s=self.default_quality_delay_s,
            failure_quality=self.failure_quality,
            outcome_interval_s=self.outcome_interval_s,
            max_choices=self.max_choices,
        )

    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.connect_timeout_s, read=self.read_timeout_s)

    def egress(self, *, development: bool, database_url: str | None,
               resolver: Resolver | None = None) -> EgressPolicy:
        """The upstream egress policy (development mode also admits loopback)."""
        return EgressPolicy(allow=parse_allow(self.upstream_allow), loopback=development,
                            key_envs=self.api_key_envs, database_url=database_url,
                            resolver=resolver or resolve_system)


def gateway_settings_of(settings: Any) -> GatewaySettings:
    """``settings.gateway`` if the service settings carry one, else the environment's
    (an invalid value raises :class:`SettingsError` naming it)."""
    configured = getattr(settings, "gateway", None)
    if isinstance(configured, GatewaySettings):
        return configured
    try:
        return GatewaySettings()
    except ValidationError as exc:
        raise SettingsError("; ".join(
            f"setting 'gateway.{'.'.join(map(str, e['loc']))}' (ROUTEBANDIT_GATEWAY_"
            f"{str(e['loc'][0]).upper() if e['loc'] else ''}): {e['msg']}"
            for e in exc.errors())) from exc
