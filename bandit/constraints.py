"""Hard constraints applied before the policy scores anything.

A model is eligible when it has every capability the request needs (:attr:`Context.needs
<bandit.features.Context.needs>`), the requested ``max_tokens`` is within its
``max_output_tokens`` (when the catalog states one), the prompt plus the requested
``max_tokens`` fits its context window, and it is on the caller's allow-list (when one
is given). A capability the catalog does not state is one the model lacks.

When no model is eligible, :class:`~bandit.errors.NoEligibleModelError` says why for each
model and names in ``needs`` what the request asked that no allowed model offers: a
capability, ``max_output_tokens`` or ``context_window``.
"""

from __future__ import annotations

from collections.abc import Collection

from bandit.catalog import Catalog, ModelSpec
from bandit.errors import NoEligibleModelError, RequestError
from bandit.features import Context


def ineligibility(spec: ModelSpec, context: Context) -> str | None:
    """Why ``spec`` cannot serve ``context``, or ``None`` when it can."""
    return _ineligibility(spec, context, context.needs)


def _ineligibility(spec: ModelSpec, context: Context, needs: frozenset[str]) -> str | None:
    # Checked for every model on every decision, and most requests need no capability.
    if needs and not needs <= spec.capabilities:
        return f"lacks capability {', '.join(sorted(needs - spec.capabilities))}"
    if (context.max_tokens is not None and spec.max_output_tokens is not None
            and context.max_tokens > spec.max_output_tokens):
        return (f"max_output_tokens {spec.max_output_tokens} < {context.max_tokens} "
                "max_tokens requested")
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
    >>> eligible_models(cat, featurize(parse_request(prompt="hi", reasoning_effort="high")))
    Traceback (most recent call last):
    ...
    bandit.errors.NoEligibleModelError: no model can serve this request: it needs \
reasoning, which no model has (text: lacks capability reasoning; eyes: lacks capability \
reasoning)
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
    needs = context.needs
    for spec in catalog:
        if allow is not None and spec.name not in allow:
            reasons[spec.name] = "not in the request's allow-list"
            continue
        why = _ineligibility(spec, context, needs)
        if why is None:
            out.append(spec)
        else:
            reasons[spec.name] = why
    if not out:
        allowed = [s for s in catalog if allow is None or s.name in allow]
        unmet = _unmet(allowed, context, needs)
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        said = f": it needs {', '.join(unmet)}, which no model has" if unmet else ""
        raise NoEligibleModelError(
            f"no model can serve this request{said} ({detail})", reasons=reasons,
            needs=unmet,
        )
    return out


def _unmet(specs: list[ModelSpec], context: Context, needs: frozenset[str]) -> tuple[str, ...]:
    """What the request asks that none of ``specs`` offers, alone: the capabilities no
    model has, else the output or window no model gives."""
    unmet = tuple(sorted(c for c in needs if not any(c in s.capabilities for s in specs)))
    if unmet:
        return unmet
    asked = context.max_tokens
    # The output alone is too long for a model when it says so or its whole window is.
    if asked is not None and all(
            min(s.max_output_tokens or s.context_window, s.context_window) < asked
            for s in specs):
        return ("max_output_tokens",)
    if all(context.input_tokens + (context.max_tokens or 0) > s.context_window for s in specs):
        return ("context_window",)
    return ()
