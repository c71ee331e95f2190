"""Service settings: flags > ``ROUTEBANDIT_*`` environment > config file > defaults.

The config file (TOML or YAML) is named by ``--config`` or ``ROUTEBANDIT_CONFIG``; its
keys are the field names below. Everything is validated at start-up and an error names
the bad setting, e.g. ``setting 'port' (--port / ROUTEBANDIT_PORT): Input should be
less than or equal to 65535``.

The data directory defaults to ``~/.routebandit`` (per user, independent of the working
directory, so ``routebandit serve`` finds the same database wherever it is started).
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from bandit.errors import RouteBanditError
from bandit.policy import EXPLORATIONS, PolicyConfig
from bandit.reward import RewardWeights
from serving.egress import DEFAULT_KEY_ENVS, parse_allow

ENV_PREFIX = "ROUTEBANDIT_"
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("routebandit_config_file", default=None)


class SettingsError(RouteBanditError, ValueError):
    """A setting is invalid; the message names it."""


class Weights(BaseModel):
    """Reward weights (see :mod:`bandit.reward`): quality, cost per $0.001, latency per s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: float = Field(1.0, ge=0, allow_inf_nan=False)
    cost: float = Field(0.02, ge=0, allow_inf_nan=False)
    latency: float = Field(0.0, ge=0, allow_inf_nan=False)

    def reward_weights(self) -> RewardWeights:
        return RewardWeights(quality=self.quality, cost=self.cost, latency=self.latency)


DEFAULT_PROFILES = {
    "quality": Weights(quality=1.0, cost=0.002, latency=0.0),
    "balanced": Weights(quality=1.0, cost=0.02, latency=0.02),
    "cheap": Weights(quality=1.0, cost=0.2, latency=0.0),
}


# Settings that take one of a few words, and those words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "exploration": EXPLORATIONS,
    "otel": ("auto", "on", "off"),
    "split_mode": ("off", "shadow", "ab"),
    "embedder": ("local", "none", "openai"),
}


class EmbedderOpenAI(BaseModel):
    """An OpenAI-compatible embeddings endpoint (``embedder: openai``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 "
                                 "(``/embeddings`` is appended); vetted by the egress policy.")
    model: str | None = Field(None, description="e.g. text-embedding-3-small.")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    timeout_s: float = Field(0.25, gt=0, le=10, description="Longest a decision waits for "
                             "an embedding; past it the decision goes on without one.")


class JudgeSettings(BaseModel):
    """The sampled LLM judge (docs/judge.md); ``model`` unset: no judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="A catalog model that grades answers; "
                              "called directly, never routed nor learned from.")
    sample_rate: float = Field(0.05, ge=0, le=1, description="Share of gateway answers "
                               "graded (seeded by decision id).")
    seed: int = Field(0, description="Seed of the sample.")
    daily_budget_usd: float = Field(1.0, ge=0, allow_inf_nan=False, description="Most the "
                                    "judge's calls may cost per UTC day; then it stops.")
    rubric: str | None = Field(None, max_length=8000, description="What a good answer is "
                               "(default: a general one); metadata.judge_rubric overrides "
                               "it per request.")
    weight: float = Field(0.8, ge=0, le=1, description="How far a grade moves the learned "
                          "quality from 0.5 (1: its score as is).")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Longest one judge call.")
    retries: int = Field(1, ge=0, le=5, description="Further tries after a timeout or error.")
    rate_per_minute: float = Field(60.0, gt=0, description="Most judge calls per minute; "
                                   "sampled answers beyond it are skipped.")
    max_queue: int = Field(1000, ge=1, description="Answers waiting for the judge; beyond "
                           "it they are skipped.")
    calibrate: bool = Field(True, description="Shift the judge's grades of each model by "
                            "its mean offset from people's scores of that model.")
    calibration_min_pairs: int = Field(20, ge=1, description="People's scores of a model "
                                       "needed before its calibration applies.")


class GradeSettings(BaseModel):
    """When grades no one posted become feedback (docs/judge.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_s: float = Field(300.0, ge=0, description="A grade waits this long for a posted "
                           "score before the router learns it.")
    interval_s: float = Field(5.0, gt=0, le=3600, description="How often due grades are "
                              "promoted.")


class SignalSettings(BaseModel):
    """Implicit signals of a bad answer, each a feedback source (docs/judge.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    length: bool = Field(True, description="An answer cut off by its length limit.")
    length_weight: float = Field(0.6, ge=0, le=1)
    json_: bool = Field(True, alias="json", description="Output that fails the requested "
                        "JSON (schema).")
    json_weight: float = Field(0.8, ge=0, le=1)
    tool_args: bool = Field(True, description="A tool call whose arguments are not JSON.")
    tool_args_weight: float = Field(0.8, ge=0, le=1)
    regenerated: bool = Field(True, description="The same conversation resent soon after "
                              "its answer: against that answer.")
    regenerated_weight: float = Field(0.4, ge=0, le=1)
    regenerate_window_s: float = Field(120.0, gt=0, le=86400)
    abandoned: bool = Field(False, description="A stream the client left mid-answer "
                            "(off: clients also stop streams they are done with).")
    abandoned_weight: float = Field(0.4, ge=0, le=1)


class GatewaySettings(BaseModel):
    """The gateway's knobs: failover, time budgets, cooldown, cascade, cache, default
    quality, the upstream pool and egress (``ROUTEBANDIT_GATEWAY__<NAME>``, or
    ``gateway:`` in the config file; serving/gateway_settings.py turns them into the
    gateway's parts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class Settings(BaseSettings):
    """Everything ``routebandit serve`` can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", env_nested_delimiter="__", frozen=True,
        hide_input_in_errors=True,  # a rejected feature_key is never echoed
    )

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    data_dir: Path = Field(Path("~/.routebandit"), description="Database and state directory.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite at <data_dir>/routebandit.db."
    )
    catalog: Path | None = Field(None, description="Model catalog YAML; default the example.")
    policy: Path | None = Field(
        None, description="Saved policy to start from when the database has no checkpoint."
    )
    seed: int = Field(0, description="Seed of a fresh policy's exploration.")
    exploration: str = Field(PolicyConfig().exploration,
                             description="Exploration of a fresh policy.")
    profiles: dict[str, Weights] = Field(default_factory=lambda: dict(DEFAULT_PROFILES))
    default_profile: str = Field("balanced", description="Profile used when none is given.")
    store_prompts: bool = Field(False, description="Store raw prompt text with decisions.")
    feature_key: SecretStr | None = Field(
        None, description="Secret every word of a prompt is hashed with "
        "before it becomes a feature (docs/service.md); the same on every process sharing "
        "the database. Default: a random key kept in <data_dir>/feature.key.")
    flush_interval_ms: int = Field(
        200, ge=1, le=1000, description="Decision write-behind interval (<= 1 s)."
    )
    wal_checkpoint_interval_s: float = Field(
        1.0, ge=0, le=60, description="SQLite: checkpoint the WAL from a thread this often "
        "(sooner at 4 MiB); 0: SQLite's automatic checkpoint, inside the writer's commits."
    )
    checkpoint_every: int = Field(1000, ge=1, description="Checkpoint after this many learns.")
    checkpoint_interval_s: float = Field(30.0, gt=0, description="...or this often.")
    learn_forced: bool = Field(True, description="Learn from forced (pass-through) decisions.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body (413).")
    max_prompt_chars: int = Field(200_000, ge=1, description="Longest prompt (422).")
    decision_cache_size: int = Field(50_000, ge=0, description="Recent decisions in memory.")
    commit_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest a feedback waits for its commit; past "
        "it the client gets 503 with Retry-After (the feedback stays queued).")
    shutdown_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Longest shutdown waits for the learner, the "
        "writer and the last checkpoint, each.")
    log_level: str = Field("info", description="Logging level.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else SQLite "
        "<data_dir>/mlflow.db (docs/mlflow.md)."
    )
    policy_versions: bool = Field(
        True, description="Serve the MLflow champion, follow promotions, snapshot the policy."
    )
    versions_poll_s: float = Field(10.0, gt=0, description="How often to check the champion.")
    snapshot_every: int = Field(1000, ge=1, description="Snapshot to MLflow every N learns.")
    snapshot_interval_s: float = Field(900.0, gt=0, description="...or this often (seconds).")
    split_mode: str = Field(
        "off", description="Challenger traffic: off, shadow (decides and logs only) or ab."
    )
    split_percent: float = Field(
        0.0, ge=0, le=100, description="In ab mode, the % of user keys the challenger serves."
    )
    stats_refresh_s: float = Field(
        60.0, ge=0, le=3600, description="Refresh the stats roll-ups (the dashboard's) this "
        "often; 0: never in this process (the questions then read the raw tables)."
    )
    embedder: str = Field(
        "local", description="Embeds prompts for clusters of meaning (docs/service.md): "
        "local (wordllama, in process, never downloads), openai (embedder_openai) or none.")
    embedder_openai: EmbedderOpenAI = Field(
        EmbedderOpenAI(base_url=None, model=None, api_key_env=None, timeout_s=0.25),
        description="embedder: openai: base_url, model, api_key_env, timeout_s.")
    gateway: GatewaySettings = Field(
        default_factory=lambda: GatewaySettings.model_validate({}),
        description="The gateway's knobs (ROUTEBANDIT_GATEWAY__<NAME>, docs/gateway.md).")
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings.model_validate({}),
                                 description="The sampled LLM judge (docs/judge.md).")
    grades: GradeSettings = Field(default_factory=lambda: GradeSettings.model_validate({}),
                                  description="When grades no one posted are learned.")
    signals: SignalSettings = Field(
        default_factory=lambda: SignalSettings.model_validate({}),
        description="Implicit signals of a bad answer, each a feedback source.")
    otel: str = Field(
        "auto", description="FastAPI's OpenTelemetry spans, metrics and logs: on, off, or "
        "auto: on when OpenTelemetry is configured when the service starts (docs/deploy.md)."
    )

    @field_validator(*_CHOICES)
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        choices = _CHOICES[info.field_name or ""]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    @field_validator("feature_key")
    @classmethod
    def _feature_key(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never shows the value, nor its length.
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters, e.g. 64 random hex digits "
                             "(python -c 'import secrets; print(secrets.token_hex(32))')")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, value: dict[str, Weights]) -> dict[str, Weights]:
        for name, w in value.items():
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"profile name {name!r}: use letters, digits, - and _")
            if w.quality == w.cost == w.latency == 0:
                raise ValueError(f"profile {name!r}: at least one weight must be positive")
        return {**DEFAULT_PROFILES, **value}  # configured profiles add to the defaults

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        if path is None:
            return (init_settings, env_settings)
        if path.suffix.lower() == ".toml":
            source: PydanticBaseSettingsSource = TomlConfigSettingsSource(settings_cls, path)
        else:
            source = YamlConfigSettingsSource(settings_cls, path)
        return (init_settings, env_settings, source)

    # -- derived ---------------------------------------------------------------------
    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'routebandit.db'}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def weights_for(self, profile: str | None) -> RewardWeights:
        name = profile or self.default_profile
        return self.profiles[name].reward_weights()


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate settings; ``overrides`` (flags) win over env and the file.

    Raises :class:`SettingsError` naming the bad setting.
    """
    path_raw = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(path_raw).expanduser() if path_raw else None
    if path is not None and not path.is_file():
        raise SettingsError(f"setting 'config' ({path}): no such file")
    legacy = sorted(k for k in os.environ
                    if k.startswith(f"{ENV_PREFIX}GATEWAY_")
                    and not k.startswith(f"{ENV_PREFIX}GATEWAY__"))
    if legacy:
        # Renamed when the gateway's settings joined the others: refuse rather than
        # silently ignore a deployment's knob.
        name = legacy[0]
        raise SettingsError(
            f"setting {name}: the gateway's settings are now nested: rename it to "
            f"{ENV_PREFIX}GATEWAY__{name[len(ENV_PREFIX) + len('GATEWAY_'):]}")
    token = _CONFIG_FILE.set(path)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
    except (ValueError, OSError) as exc:  # unreadable or malformed config file
        raise SettingsError(f"setting 'config' ({path}): {exc}") from exc
    finally:
        _CONFIG_FILE.reset(token)
    if settings.default_profile not in settings.profiles:
        raise SettingsError(
            f"setting 'default_profile': {settings.default_profile!r} is not a profile "
            f"(profiles: {', '.join(sorted(settings.profiles))})"
        )
    return settings


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        top = str(err["loc"][0]) if err["loc"] else ""
        flag = f"--{top.replace('_', '-')} / " if top in _FLAGS else ""
        env = "__".join(str(p).upper() for p in err["loc"][:2]
                        if isinstance(p, str)) or top.upper()
        parts.append(f"setting '{loc}' ({flag}{ENV_PREFIX}{env}): {err['msg']}")
    return "; ".join(parts)


# Settings that also have a command-line flag (for error messages).
_FLAGS = frozenset({"host", "port", "catalog", "data_dir", "database_url", "policy",
                    "log_level"})
