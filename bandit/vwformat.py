"""The Vowpal Wabbit text format of contexts and actions (pinned by golden tests).

Shared namespaces: ``u`` last user turn (words and bigrams), ``q`` its last paragraph,
``s`` system prompt, ``t`` tags, ``n`` numeric features. Action namespaces: ``a`` the
model's identity and static traits, ``c`` its expected cost and latency penalties under
the request's reward weights.
"""

from __future__ import annotations

import math

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


def shared_line(context: Context) -> str:
    """The ``shared`` line of a context.

    >>> from bandit.features import Context
    >>> ctx = Context(namespaces={"u": ("hi", "there")}, numeric={"turns": 1.0},
    ...               input_tokens=3)
    >>> shared_line(ctx)
    'shared |u:0.707107 hi there |n turns:1'
    """
    parts = ["shared"]
    for name in ("u", "q", "s", "t"):
        parts.append(_ns(name, context.namespaces.get(name, ())))
    numeric = " ".join(f"{k}:{v:.6g}" for k, v in context.numeric.items() if v)
    if numeric:
        parts.append(f" |n {numeric}")
    return "".join(parts)


def action_features(spec: ModelSpec, *, cost_penalty: float, latency_penalty: float) -> str:
    """The feature text of one action (without a label).

    >>> from bandit.catalog import ModelSpec
    >>> action_features(ModelSpec(name="m", input_price=1.0, capabilities=frozenset({"json"})),
    ...                 cost_penalty=0.25, latency_penalty=0.0)
    '|a m=m p=unknown lp:0.693147 cw:9.01104 cap=json |c wc:0.25'
    """
    caps = " ".join(f"cap={c}" for c in sorted(spec.capabilities))
    a = (
        f"|a m={escape(spec.name)} p={escape(spec.provider_name)}"
        f" lp:{math.log1p(spec.input_price + spec.output_price):.6g}"
        f" cw:{math.log1p(spec.context_window):.6g}"
    )
    if caps:
        a += " " + caps
    c = []
    if cost_penalty:
        c.append(f"wc:{cost_penalty:.6g}")
    if latency_penalty:
        c.append(f"wl:{latency_penalty:.6g}")
    return a + (" |c " + " ".join(c) if c else "")


def labelled(features: str, *, cost: float, probability: float) -> str:
    """An action line carrying the CB label ``0:cost:probability`` (cost = -reward).

    >>> labelled("|a m=x", cost=-0.8, probability=0.25)
    '0:-0.8:0.25 |a m=x'
    """
    return f"0:{cost:.6g}:{probability:.6g} {features}"
