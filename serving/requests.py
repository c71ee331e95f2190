"""What a client may send, validated once whichever door it comes by.

``/v1/route``, ``/v1/feedback`` and the gateway's doors share these types, so a field is
held to the same rules on every way in. Text that can reach a record, a metric label, a
log line or an error message is valid Unicode (no lone surrogates: PostgreSQL, SQLite's
driver and every UTF-8 encoder refuse them), has no NUL and is bounded; numbers are
finite and bounded. A refusal names the field (``"routebandit.metadata.task: ..."``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from bandit.errors import RequestError
from bandit.reward import MAX_WEIGHT


def unicode_text(value: str) -> str:
    """``value`` if it is valid Unicode (no lone surrogate); else ``ValueError``."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate "
                             "code point)") from None
    return value


def plain_text(value: str) -> str:
    """``value`` if it is valid Unicode without NUL characters; else ``ValueError``."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return unicode_text(value)


def _unicode_tree(value: Any) -> Any:
    for where, bad in _bad_strings(value):
        raise ValueError(f"holds text that is not valid Unicode (a lone surrogate) at "
                         f"{where or 'the top'}: {shown(bad)}")
    return value


#: Prompt text: any Unicode (NUL included: it is content, and never stored raw).
Content = Annotated[str, AfterValidator(unicode_text)]
#: A JSON tree (messages, tools) whose every string is valid Unicode.
UnicodeTree = AfterValidator(_unicode_tree)
#: Bounded text fields: valid Unicode, no NUL, at most N characters.
Tag = Annotated[str, Field(max_length=64), AfterValidator(plain_text)]
Key = Annotated[str, Field(max_length=128), AfterValidator(plain_text)]
ModelName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(plain_text)]
Weight = Annotated[float, Field(strict=True, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]


class WeightsIn(BaseModel):
    """Reward weights overriding the profile's (see docs/service.md)."""

    model_config = ConfigDict(extra="forbid")
    quality: Weight | None = None
    cost: Weight | None = None
    latency: Weight | None = None


class Metadata(BaseModel):
    """Tags: ``tenant`` (development mode only; a key fixes it), ``task``, ``user_key``."""

    model_config = ConfigDict(extra="allow")
    tenant: Tag | None = None
    task: Tag | None = None
    user_key: Key | None = None
    user: Key | None = None


class GatewayExtension(BaseModel):
    """The gateway's ``routebandit`` object (the SDK's ``extra_body``): never forwarded."""

    model_config = ConfigDict(extra="forbid")
    cascade: StrictBool | None = None
    metadata: Metadata | None = None
    weights: WeightsIn | None = None
    models: Annotated[list[ModelName], Field(min_length=1, max_length=256)] | None = None


def check_tenant(metadata: Metadata | None, tenant: str | None, where: str) -> None:
    """Refuse a ``metadata.tenant`` that contradicts the API key's tenant."""
    claimed = None if metadata is None else metadata.tenant
    if tenant is not None and claimed is not None and claimed != tenant:
        raise RequestError(f"{where}.tenant: does not match the API key's tenant "
                           "(leave it out: the key names the tenant)")


def validation_error(exc: ValidationError, prefix: str) -> RequestError:
    """The first error of ``exc`` as a :class:`RequestError` naming ``prefix.<field>``."""
    first = exc.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return RequestError(f"{prefix}{loc}: {message}")


def loads(raw: bytes) -> Any:
    """Parse a JSON body; raises :class:`RequestError` naming what is wrong and where.

    Refused: malformed JSON, ``NaN`` and ``Infinity``, numbers that overflow a double,
    strings with lone surrogates, nesting deeper than 1,000 levels. orjson refuses all
    of these in one pass; only a refused body is parsed again to say where.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _where(raw, exc) from None


def shown(value: str, limit: int = 64) -> str:
    """``value`` as an error message may quote it: escaped where not printable, cut."""
    cut = value[:limit] + ("..." if len(value) > limit else "")
    return json.dumps(cut)  # ASCII, quoted, lone surrogates as \\udxxx


def _where(raw: bytes, exc: orjson.JSONDecodeError) -> RequestError:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except _NonFinite as bad:
        return RequestError(f"body: {bad}")
    except RecursionError:
        return RequestError("body: JSON nested too deeply")
    except UnicodeDecodeError as bad:
        return RequestError(f"body: not valid UTF-8 (byte at {bad.start})")
    except ValueError as bad:  # json.JSONDecodeError
        return RequestError(f"body: not valid JSON ({bad})")
    for where, text in _bad_strings(value):
        return RequestError(f"{where or 'body'}: must be valid Unicode text (it holds a "
                            f"lone surrogate code point): {shown(text)}")
    for where, number in _floats(value):
        if not math.isfinite(number):
            return RequestError(f"{where or 'body'}: number out of range (it overflows "
                                "a 64-bit float)")
    if _depth(value) > 1000:
        return RequestError("body: JSON nested too deeply")
    return RequestError(f"body: not valid JSON ({exc})")


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not a valid JSON number")


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every key and value of a JSON tree with its path (``a.b[0].c``), iteratively."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        yield where, node
        if isinstance(node, dict):
            for k, v in reversed(node.items()):
                yield f"{where}.{k}" if where else str(k), k
                stack.append((f"{where}.{k}" if where else str(k), v))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(node))))


def _bad_strings(value: Any) -> Iterator[tuple[str, str]]:
    for where, node in _walk(value):
        if isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                yield where, node


def _floats(value: Any) -> Iterator[tuple[str, float]]:
    for where, node in _walk(value):
        if isinstance(node, float):
            yield where, node


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest
