"""The model catalog: which LLMs may answer, what they cost and what they can do.

A catalog is a YAML file with a top-level ``models`` list. Every field is validated and
an invalid file raises :class:`~bandit.errors.CatalogError` naming the bad field, e.g.
``models[2].input_price: must be a number >= 0, got 'cheap'``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bandit.errors import CatalogError

#: What a model can take or do beyond plain text in, text out (see ModelSpec).
KNOWN_CAPABILITIES = frozenset({"vision", "tools", "json", "audio", "file", "reasoning"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_FIELDS = (
    "name",
    "base_url",
    "api_key_env",
    "input_price",
    "output_price",
    "context_window",
    "capabilities",
    "provider",
    "latency_ms",
    "upstream_model",
    "first_byte_timeout_s",
    "api",
    "cached_input_price",
    "cache_write_price",
    "max_output_tokens",
)
# The upstream's protocol (``api``): None is OpenAI's Chat Completions.
APIS = ("openai", "anthropic", "gemini")


@dataclass(frozen=True)
class ModelSpec:
    """One model the router may choose.

    Prices are USD per million tokens. ``latency_ms`` is an optional prior for the
    latency of a typical call, used until the router has measured the model itself.
    ``first_byte_timeout_s`` overrides the gateway's wait for a stream's first chunk
    (a reasoning model may think for a minute before it sends one).

    ``capabilities`` are what the model takes or does beyond text in, text out:
    ``vision`` (image parts), ``audio`` (audio parts or audio output), ``file`` (file
    and document parts, such as a PDF), ``tools`` (tool definitions), ``json`` (JSON
    mode and ``json_schema`` structured output) and ``reasoning`` (reasoning parameters:
    an effort or a thinking budget). A model that states none serves only requests that
    need none: a capability is never assumed, so an older catalog keeps routing what it
    did, and a request needing what it does not state gets a 4xx naming the capability.
    ``max_output_tokens``, when stated, bounds the output a request may ask for; the
    prompt plus the requested output must always fit ``context_window``.

    >>> spec = ModelSpec(name="small", input_price=0.15, output_price=0.6)
    >>> round(spec.call_cost_usd(input_tokens=1000, output_tokens=500), 6)
    0.00045
    >>> spec.provider_name
    'unknown'
    """

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    input_price: float = 0.0
    output_price: float = 0.0
    context_window: int = 8192
    capabilities: frozenset[str] = field(default_factory=frozenset)
    provider: str | None = None
    latency_ms: float | None = None
    upstream_model: str | None = None
    first_byte_timeout_s: float | None = None
    # The protocol the upstream speaks: None (OpenAI-compatible Chat Completions) or
    # "anthropic" (Messages API) or "gemini" (generateContent); None keeps older
    # catalogs' digests unchanged.
    api: str | None = None
    # Prompt tokens read from / written to the provider's prompt cache, USD per million
    # (None: charged at input_price; left out of to_dict, so older digests stay).
    cached_input_price: float | None = None
    cache_write_price: float | None = None
    # The longest answer the model gives (None: not stated, only the window bounds it).
    max_output_tokens: int | None = None

    @property
    def provider_name(self) -> str:
        """Provider label: the explicit one, else the host of ``base_url``, else ``unknown``."""
        if self.provider:
            return self.provider
        if self.base_url:
            host = re.sub(r"^[a-z]+://", "", self.base_url).split("/")[0].split(":")[0]
            return host or "unknown"
        if "/" in self.name:
            return self.name.split("/")[0]
        return "unknown"

    @property
    def wire_name(self) -> str:
        """The model name sent upstream (defaults to the catalog name)."""
        return self.upstream_model or self.name

    def call_cost_usd(self, *, input_tokens: float, output_tokens: float,
                      cached_input_tokens: float = 0.0, cache_write_tokens: float = 0.0,
                      ) -> float:
        """Cost of one call in USD from list prices (per million tokens).

        ``cached_input_tokens`` (read from the prompt cache) and ``cache_write_tokens``
        (written to it) are counted in ``input_tokens`` and charged at
        ``cached_input_price`` and ``cache_write_price`` when the catalog gives them.

        >>> spec = ModelSpec(name="m", input_price=1.0, cached_input_price=0.1)
        >>> round(spec.call_cost_usd(input_tokens=1000, output_tokens=0,
        ...                          cached_input_tokens=800), 6)
        0.00028
        """
        cached = min(max(0.0, cached_input_tokens), input_tokens)
        written = min(max(0.0, cache_write_tokens), input_tokens - cached)
        read_price = self.input_price if self.cached_input_price is None \
            else self.cached_input_price
        write_price = self.input_price if self.cache_write_price is None \
            else self.cache_write_price
        return ((input_tokens - cached - written) * self.input_price + cached * read_price
                + written * write_price + output_tokens * self.output_price) / 1e6

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["capabilities"] = sorted(self.capabilities)
        return {k: v for k, v in out.items() if v is not None}


def _number(value: Any, where: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise CatalogError(f"{where}: must be {kind} >= {minimum:g}, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise CatalogError(f"{where}: must be a finite number >= {minimum:g}, got {value!r}")
    if integer and int(value) != value:
        raise CatalogError(f"{where}: must be an integer, got {value!r}")
    return float(value)


def _optional_str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def parse_model(raw: Any, where: str = "model") -> ModelSpec:
    """Validate one catalog entry (a mapping) into a :class:`ModelSpec`.

    >>> parse_model({"name": "m", "input_price": -1})
    Traceback (most recent call last):
    ...
    bandit.errors.CatalogError: model.input_price: must be a finite number >= 0, got -1
    """
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: must be a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - set(_FIELDS))
    if unknown:
        raise CatalogError(
            f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(_FIELDS)})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CatalogError(
            f"{where}.name: must be 1-128 characters of letters, digits and ._:/@+-, "
            f"got {name!r}"
        )
    caps_raw = raw.get("capabilities", [])
    if caps_raw is None:
        caps_raw = []
    if not isinstance(caps_raw, (list, tuple)) or not all(isinstance(c, str) for c in caps_raw):
        raise CatalogError(f"{where}.capabilities: must be a list of strings, got {caps_raw!r}")
    bad_caps = sorted(set(caps_raw) - KNOWN_CAPABILITIES)
    if bad_caps:
        raise CatalogError(
            f"{where}.capabilities: unknown capability {bad_caps[0]!r} "
            f"(known: {', '.join(sorted(KNOWN_CAPABILITIES))})"
        )
    base_url = _optional_str(raw.get("base_url"), f"{where}.base_url")
    if base_url is not None and not re.match(r"^https?://", base_url):
        raise CatalogError(
            f"{where}.base_url: must start with http:// or https://, got {base_url!r}"
        )
    latency = raw.get("latency_ms")
    first_byte = raw.get("first_byte_timeout_s")
    if first_byte is not None and _number(first_byte, f"{where}.first_byte_timeout_s") <= 0:
        raise CatalogError(f"{where}.first_byte_timeout_s: must be > 0, got {first_byte!r}")
    max_output = raw.get("max_output_tokens")
    api = raw.get("api")
    if api is not None and api not in APIS:
        raise CatalogError(f"{where}.api: must be one of {', '.join(APIS)}, got {api!r}")
    cached_price, write_price = (
        None if raw.get(key) is None else _number(raw[key], f"{where}.{key}")
        for key in ("cached_input_price", "cache_write_price"))
    return ModelSpec(
        name=name,
        base_url=base_url.rstrip("/") if base_url else None,
        api_key_env=_optional_str(raw.get("api_key_env"), f"{where}.api_key_env"),
        input_price=_number(raw.get("input_price", 0.0), f"{where}.input_price"),
        output_price=_number(raw.get("output_price", 0.0), f"{where}.output_price"),
        context_window=int(
            _number(raw.get("context_window", 8192), f"{where}.context_window", minimum=1,
                    integer=True)
        ),
        capabilities=frozenset(caps_raw),
        provider=_optional_str(raw.get("provider"), f"{where}.provider"),
        latency_ms=None if latency is None else _number(latency, f"{where}.latency_ms"),
        upstream_model=_optional_str(raw.get("upstream_model"), f"{where}.upstream_model"),
        first_byte_timeout_s=None if first_byte is None else float(first_byte),
        api=None if api in (None, "openai") else str(api),
        cached_input_price=cached_price,
        cache_write_price=write_price,
        max_output_tokens=None if max_output is None else int(
            _number(max_output, f"{where}.max_output_tokens", minimum=1, integer=True)),
    )


@dataclass(frozen=True)
class Catalog:
    """An ordered, immutable set of models with unique names.

    >>> cat = Catalog.from_dict({"models": [{"name": "a"}, {"name": "b"}]})
    >>> cat.names
    ('a', 'b')
    >>> cat.without("a").names
    ('b',)
    """

    models: tuple[ModelSpec, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise CatalogError(f"models[{i}].name: duplicate model name {m.name!r}")
            seen.add(m.name)

    @classmethod
    def from_dict(cls, raw: Any) -> Catalog:
        if not isinstance(raw, Mapping) or "models" not in raw:
            raise CatalogError("catalog: must be a mapping with a 'models' list")
        extra = sorted(set(map(str, raw)) - {"models"})
        if extra:
            raise CatalogError(f"catalog.{extra[0]}: unknown top-level field (only 'models')")
        models = raw["models"]
        if not isinstance(models, list) or not models:
            raise CatalogError("catalog.models: must be a non-empty list of models")
        return cls(tuple(parse_model(m, f"models[{i}]") for i, m in enumerate(models)))

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "catalog") -> Catalog:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogError(f"{source}: not valid YAML: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read and validate a catalog file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{p}: cannot read catalog file ({exc.strerror})") from exc
        return cls.from_yaml(text, source=str(p))

    @classmethod
    def of(cls, models: Iterable[ModelSpec]) -> Catalog:
        return cls(tuple(models))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.models)

    def get(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_model(self, spec: ModelSpec) -> Catalog:
        """A new catalog with ``spec`` added, or replacing the model of the same name."""
        if spec.name in self:
            return Catalog(tuple(spec if m.name == spec.name else m for m in self.models))
        return Catalog((*self.models, spec))

    def without(self, name: str) -> Catalog:
        if name not in self:
            raise KeyError(name)
        rest = tuple(m for m in self.models if m.name != name)
        if not rest:
            raise CatalogError(f"cannot remove {name!r}: the catalog would be empty")
        return Catalog(rest)

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models]}

    def to_yaml(self) -> str:
        text: str = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return text

    def digest(self) -> str:
        """A short stable hash of the catalog contents (for policy metadata)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def renamed(self, mapping: Mapping[str, str]) -> Catalog:
        return Catalog(tuple(replace(m, name=mapping.get(m.name, m.name)) for m in self.models))


def example_catalog_path() -> Path:
    """Path of the example catalog shipped with the package."""
    return Path(__file__).with_name("data") / "catalog.example.yaml"
