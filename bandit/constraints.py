"""Hard constraints applied before the policy scores anything.

A model is eligible when it has every capability the request needs, the prompt plus the
requested ``max_tokens`` fits its context window, and it is on the caller's allow-list
(when one is given).
"""

from __future__ import annotations

from collections.abc import Collection

from bandit.catalog import Catalog, ModelSpec
from bandit.errors import NoEligibleModelError, RequestError
from bandit.features import Context


def ineligibility(spec: ModelSpec, context: Context) -> str | None:
    """Why ``spec`` cannot serve ``context``, or ``None`` when it can."""
    # Checked for every model on every decision, and most requests need no capability.
    if context.needs_vision or context.needs_tools or context.needs_json:
        missing = [
            cap
            for cap, needed in (
                ("vision", context.needs_vision),
                ("tools", context.needs_tools),
                ("json", context.needs_json),
            )
            if needed and cap not in spec.capabilities
        ]
        if missing:
            return f"lacks capability {', '.join(missing)}"
    need = context.input_tokens + (context.max_tokens or 0)
    if need > spec.context_window:
        return (
            f"context window {spec.context_window} < ~{context.input_tokens} prompt tokens"
            f" + {context.max_tokens or 0} max_tokens"
        )
    return None


def eligible_models(
    catalog: Catalog, context: Context, *, allow: Collection[str] | None = None
) -> list[ModelSpec]:
    """The catalog's models that may serve ``context``, in catalog order.

    >>> from bandit.catalog import Catalog
    >>> from bandit.features import featurize, parse_request
    >>> cat = Catalog.from_dict({"models": [
    ...     {"name": "text", "capabilities": []},
    ...     {"name": "eyes", "capabilities": ["vision"]}]})
    >>> msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    >>> [m.name for m in eligible_models(cat, featurize(parse_request(messages=msgs)))]
    ['eyes']
    """
    if allow is not None:
        unknown = sorted(set(allow) - set(catalog.names))
        if unknown:
            raise RequestError(
                f"models: unknown model {unknown[0]!r} (catalog has: {', '.join(catalog.names)})"
            )
        if not allow:
            raise RequestError("models: the allow-list is empty")
    reasons: dict[str, str] = {}
    out: list[ModelSpec] = []
    for spec in catalog:
        if allow is not None and spec.name not in allow:
            reasons[spec.name] = "not in the request's allow-list"
            continue
        why = ineligibility(spec, context)
        if why is None:
            out.append(spec)
        else:
            reasons[spec.name] = why
    if not out:
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        raise NoEligibleModelError(
            f"no model can serve this request ({detail})", reasons=reasons
        )
    return out
