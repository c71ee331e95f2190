"""The Vowpal Wabbit text format of contexts and actions (pinned by golden tests).

Shared namespaces: ``u`` last user turn (words and bigrams), ``q`` its last paragraph,
``s`` system prompt, ``t`` tags, ``n`` numeric features. The action namespace ``a``
holds the model's identity and static traits (cost and latency are not learned: the
policy adds them exactly, see :mod:`bandit.policy`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection

from bandit.catalog import ModelSpec
from bandit.features import Context


def escape(token: str) -> str:
    """Make a token safe for VW text (no spaces, ``|`` or ``:``)."""
    return token.replace("%", "%25").replace(":", "%3A").replace("|", "%7C").replace(" ", "%20")


def _ns(name: str, tokens: tuple[str, ...]) -> str:
    if not tokens:
        return ""
    # One over the square root of the token count keeps long and short prompts on the
    # same scale, so a single learning rate fits both.
    scale = 1.0 / math.sqrt(len(tokens))
    return f" |{name}:{scale:.6g} " + " ".join(tokens)


def shared_line(context: Context, *, namespaces: Collection[str] | None = None) -> str:
    """The ``shared`` line of a context (only ``namespaces``, when given).

    >>> from bandit.features import Context
    >>> ctx = Context(namespaces={"u": ("hi", "there")}, numeric={"turns": 1.0},
    ...               input_tokens=3, dense={"e": (0.6, 0.0, -0.8)})
    >>> shared_line(ctx)
    'shared |u:0.707107 hi there |e 0:0.6 2:-0.8 |n turns:1'
    >>> shared_line(ctx, namespaces={"n"})
    'shared |n turns:1'
    """
    parts = ["shared"]
    for name in ("u", "q", "s", "t"):
        if namespaces is None or name in namespaces:
            parts.append(_ns(name, context.tokens(name)))
    for name, vec in context.dense.items():
        if namespaces is None or name in namespaces:
            if vec and 0.0 not in vec:  # the usual case: one formatting of every value
                values = _dense_line(len(vec)) % tuple(vec)
            else:  # zeros are left out
                fmt = (_DENSE_FORMATS if len(vec) <= len(_DENSE_FORMATS)
                       else _dense_formats(len(vec)))
                values = " ".join([fmt[i] % v for i, v in enumerate(vec) if v])
            if values:
                parts.append(f" |{name} {values}")
    if namespaces is None or "n" in namespaces:
        numeric = " ".join([f"{k}:{v:.6g}" for k, v in context.numeric.items() if v])
        if numeric:
            parts.append(f" |n {numeric}")
    return "".join(parts)


def _dense_formats(n: int) -> tuple[str, ...]:
    return tuple(f"{i}:%.5g" for i in range(n))


# A dense vector is formatted on every decision: a prebuilt "i:%.5g" per index saves
# formatting the index each time (same text as f"{i}:{v:.5g}").
_DENSE_FORMATS = _dense_formats(64)


@functools.lru_cache(maxsize=16)
def _dense_line(n: int) -> str:
    # "0:%.5g 1:%.5g ...": a vector without zeros in one % (a third of the time of one
    # format per value and a join).
    return " ".join(_dense_formats(n))


@functools.lru_cache(maxsize=4096)
def action_features(spec: ModelSpec, *, generation: int = 0) -> str:
    """The feature text of one action (without a label).

    ``generation`` counts the times the model was declared changed
    (:meth:`bandit.policy.Policy.reset_model`): from the first on, its identity is a new
    feature, so what VW learned of the model as it was no longer speaks for it.

    >>> from bandit.catalog import ModelSpec
    >>> action_features(ModelSpec(name="m", input_price=1.0, capabilities=frozenset({"json"})))
    '|a m=m p=unknown lp:0.693147 cw:9.01104 cap=json'
    >>> action_features(ModelSpec(name="m"), generation=2)
    '|a m=m%g2 p=unknown lp:0 cw:9.01104'
    """
    caps = " ".join(f"cap={c}" for c in sorted(spec.capabilities))
    # "%g" never comes out of escape(): no model name can collide with a generation.
    name = escape(spec.name) + (f"%g{generation}" if generation else "")
    a = (
        f"|a m={name} p={escape(spec.provider_name)}"
        f" lp:{math.log1p(spec.input_price + spec.output_price):.6g}"
        f" cw:{math.log1p(spec.context_window):.6g}"
    )
    return a + (" " + caps if caps else "")


def labelled(features: str, *, cost: float, probability: float) -> str:
    """An action line with the CB label ``0:cost:probability`` (VW minimises cost = -quality).

    >>> labelled("|a m=x", cost=-0.8, probability=0.25)
    '0:-0.8:0.25 |a m=x'
    """
    return f"0:{cost:.6g}:{probability:.6g} {features}"
