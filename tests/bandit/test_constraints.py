"""bandit/constraints.py: a model lacking a capability, an output or a window the request
needs is never eligible, and when none is the error names what is missing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.catalog import KNOWN_CAPABILITIES, Catalog
from bandit.constraints import eligible_models, ineligibility
from bandit.errors import NoEligibleModelError
from bandit.features import featurize, parse_request

CATALOG = Catalog.from_dict({"models": [
    {"name": "plain"},  # states nothing: plain text only, in 8,192 tokens
    {"name": "eyes", "capabilities": ["vision", "file"], "context_window": 32000,
     "max_output_tokens": 1000},
    {"name": "ears", "capabilities": ["audio", "tools"], "context_window": 128000},
    {"name": "mind", "capabilities": ["reasoning", "json", "tools"], "context_window": 64000,
     "max_output_tokens": 16000},
]})
USER = [{"role": "user", "content": "hi"}]


def _parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}]


NEEDS: list[tuple[dict[str, Any], str]] = [
    ({"messages": _parts({"type": "image_url", "image_url": {"url": "x"}})}, "vision"),
    ({"messages": _parts({"type": "input_audio", "input_audio": {"data": "x",
                                                                 "format": "wav"}})}, "audio"),
    ({"messages": USER, "modalities": ["text", "audio"]}, "audio"),
    ({"messages": _parts({"type": "file", "file": {"file_data": "data:,x"}})}, "file"),
    ({"messages": USER, "reasoning_effort": "minimal"}, "reasoning"),
    ({"messages": USER, "response_format": {"type": "json_schema",
                                            "json_schema": {"name": "a"}}}, "json"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
]
IDS = ["image", "audio-part", "audio-out", "file", "reasoning", "json_schema", "tools"]


@pytest.mark.parametrize(("request_args", "need"), NEEDS, ids=IDS)
def test_a_need_admits_only_the_models_that_state_it(request_args: dict[str, Any],
                                                     need: str) -> None:
    ctx = featurize(parse_request(**request_args))
    assert ctx.needs == {need}
    assert {m.name for m in eligible_models(CATALOG, ctx)} == {
        m.name for m in CATALOG if need in m.capabilities}
    assert ineligibility(CATALOG.get("plain"), ctx) == f"lacks capability {need}"


@pytest.mark.parametrize(("request_args", "need"), NEEDS, ids=IDS)
def test_when_no_allowed_model_has_it_the_error_names_it(request_args: dict[str, Any],
                                                         need: str) -> None:
    ctx = featurize(parse_request(**request_args))
    others = [m.name for m in CATALOG if need not in m.capabilities]
    with pytest.raises(NoEligibleModelError) as err:
        eligible_models(CATALOG, ctx, allow=others)
    assert err.value.needs == (need,)
    assert f"it needs {need}, which no model has" in str(err.value)
    assert err.value.reasons["plain"] == f"lacks capability {need}"


def test_several_needs_are_all_required_and_all_named() -> None:
    ctx = featurize(parse_request(messages=_parts({"type": "input_audio"}),
                                  tools=[{"type": "function"}], reasoning_effort="high"))
    assert ctx.needs == {"audio", "tools", "reasoning"}
    with pytest.raises(NoEligibleModelError) as err:
        eligible_models(CATALOG, ctx)
    # ears has two of them and mind two others: no one model has all three, though each
    # capability is somewhere; the reasons say which each model lacks.
    assert err.value.needs == ()
    assert err.value.reasons["ears"] == "lacks capability reasoning"
    assert err.value.reasons["plain"] == "lacks capability audio, reasoning, tools"


def test_the_requested_output_must_fit_the_stated_maximum_and_the_window() -> None:
    def names(max_tokens: int) -> set[str]:
        ctx = featurize(parse_request(messages=USER, max_tokens=max_tokens))
        return {m.name for m in eligible_models(CATALOG, ctx)}

    assert names(1000) == {"plain", "eyes", "ears", "mind"}
    assert names(1001) == {"plain", "ears", "mind"}  # eyes gives 1,000 at most
    assert names(9000) == {"ears", "mind"}  # plain states no maximum: its 8,192 window
    assert names(20000) == {"ears"}  # mind's 16,000
    ctx = featurize(parse_request(messages=USER, max_tokens=200_000))
    with pytest.raises(NoEligibleModelError) as err:
        eligible_models(CATALOG, ctx)
    assert err.value.needs == ("max_output_tokens",)
    assert "max_output_tokens 16000 < 200000 max_tokens" in err.value.reasons["mind"]


def test_the_prompt_plus_the_output_must_fit_the_window() -> None:
    long = [{"role": "user", "content": "word " * 40_000}]  # ~50,000 tokens
    ctx = featurize(parse_request(messages=long, max_tokens=100))
    assert {m.name for m in eligible_models(CATALOG, ctx)} == {"ears", "mind"}
    with pytest.raises(NoEligibleModelError) as err:
        eligible_models(CATALOG, ctx, allow=["plain", "eyes"])
    assert err.value.needs == ("context_window",)
    assert err.value.reasons["eyes"].startswith("context window 32000 < ~")
    ctx = featurize(parse_request(messages=long, max_tokens=15_000))
    assert {m.name for m in eligible_models(CATALOG, ctx)} == {"ears"}  # 50,000 + 15,000


def test_a_model_without_stated_capabilities_serves_plain_requests() -> None:
    ctx = featurize(parse_request(messages=USER, max_tokens=100))
    assert ctx.needs == frozenset()
    assert [m.name for m in eligible_models(CATALOG, ctx, allow=["plain"])] == ["plain"]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from(sorted(KNOWN_CAPABILITIES))),
       st.sets(st.sampled_from(sorted(KNOWN_CAPABILITIES))))
def test_eligible_exactly_when_every_need_is_stated(has: set[str], needs: set[str]) -> None:
    catalog = Catalog.from_dict({"models": [{"name": "m", "capabilities": sorted(has)},
                                            {"name": "none"}]})
    parts = [{"type": "text", "text": "x"}]
    if "vision" in needs:
        parts.append({"type": "image_url", "image_url": {"url": "x"}})
    if "audio" in needs:
        parts.append({"type": "input_audio", "input_audio": {"data": "x"}})
    if "file" in needs:
        parts.append({"type": "file", "file": {"file_id": "f"}})
    ctx = featurize(parse_request(
        messages=[{"role": "user", "content": parts}],
        tools=[{"type": "function"}] if "tools" in needs else None,
        response_format={"type": "json_object"} if "json" in needs else None,
        reasoning_effort="low" if "reasoning" in needs else None))
    assert ctx.needs == needs
    try:
        chosen = {m.name for m in eligible_models(catalog, ctx)}
    except NoEligibleModelError as err:
        chosen = set()
        assert set(err.needs) == needs - has
    assert ("m" in chosen) == (needs <= has)
    assert ("none" in chosen) == (not needs)
