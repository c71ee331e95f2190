"""``POST /v1/messages`` through the official anthropic SDK (create, stream, tool use,
count_tokens, errors), a real gateway over HTTP in front of fake upstreams; nothing in the
SDK patched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.serving.gateway_stack import Stack

FULL = "The quick brown fox jumps over the lazy dog."
USER = [{"role": "user", "content": "Tell me about foxes"}]
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture
def client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=stack.server.url, api_key="client-key", max_retries=0,
                             timeout=10) as c:
        yield c


def test_create_translates_both_ways_and_is_measured(
        stack: Stack, client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=64, system="Be brief", messages=USER,
        extra_body={"temperature": 0.3},  # this SDK version has no temperature argument
        stop_sequences=["END"], metadata={"user_id": "u1"})
    msg = raw.parse()
    assert [b.type for b in msg.content] == ["text"]
    assert (msg.content[0].text, msg.model, msg.stop_reason) == (FULL, "mid", "end_turn")
    assert raw.headers["x-routebandit-model"] == "mid"
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief"}, *USER]
    assert (sent["max_tokens"], sent["stop"], sent["user"], sent["temperature"]) == (
        64, ["END"], "u1", 0.3)
    usage = stack.fakes["mid"].log.usages[-1]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    [outcome] = stack.outcomes(raw.headers["x-routebandit-decision-id"])
    assert (outcome.status, outcome.model) == ("ok", "mid")


def test_stream_helper_gets_anthropics_events(stack: Stack,
                                             client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="auto", max_tokens=64, messages=USER) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "text" in kinds  # the helper's own event, from content_block_delta text_delta
    assert final.content[0].type == "text" and final.content[0].text == FULL
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(FULL.split())
    assert final.usage.input_tokens > 0


def test_async_create_and_stream(stack: Stack) -> None:
    async def run() -> tuple[str, str]:
        async with anthropic.AsyncAnthropic(base_url=stack.server.url, api_key="k",
                                            max_retries=0, timeout=10) as client:
            made = await client.messages.create(model="auto", max_tokens=64, messages=USER)
            async with client.messages.stream(model="big", max_tokens=64,
                                              messages=USER) as stream:
                text = "".join([t async for t in stream.text_stream])
            block = made.content[0]
            assert block.type == "text"
            return block.text, text

    assert asyncio.run(run()) == (FULL, FULL)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_tool_use_and_its_result(stack: Stack, client: anthropic.Anthropic,
                                 streamed: bool) -> None:
    stack.fakes["mid"].behavior.tool_call = {"name": "get_weather",
                                             "arguments": '{"city": "Paris"}'}
    args: dict[str, Any] = {"model": "auto", "max_tokens": 64, "tools": [WEATHER],
                            "tool_choice": {"type": "any"},
                            "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    if streamed:
        with client.messages.stream(**args) as stream:
            kinds = [e.type for e in stream]
            msg = stream.get_final_message()
        assert "input_json" in kinds  # the helper's event for input_json_delta
    else:
        msg = client.messages.create(**args)
    [block] = msg.content
    assert block.type == "tool_use"
    assert (block.name, block.input, block.id) == ("get_weather", {"city": "Paris"},
                                                   "call_fake1")
    assert msg.stop_reason == "tool_use"
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    stack.fakes["mid"].behavior.tool_call = None
    second = client.messages.create(model="auto", max_tokens=64, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}])
    assert second.stop_reason == "end_turn"
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_fake1",
                                   "content": "sunny"}


def test_an_image_and_a_length_cut(stack: Stack, client: anthropic.Anthropic) -> None:
    stack.fakes["mid"].behavior.answer = "truncated"
    msg = client.messages.create(model="auto", max_tokens=5, messages=[
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}},
            {"type": "text", "text": "What is this?"}]}])
    assert msg.stop_reason == "max_tokens"
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["messages"][0]["content"][0] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_count_tokens_is_an_estimate(stack: Stack, client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="auto", messages=USER)
    longer = client.messages.count_tokens(model="auto", messages=USER, system="Be brief " * 50,
                                          tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens
    assert stack.fakes["mid"].log.requests == []  # no upstream asked


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"model": "no-such-model"}, anthropic.NotFoundError, "no-such-model"),
    ({"max_tokens": 0}, anthropic.BadRequestError, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "url", "url": "https://example.com/a.pdf"}}]}]},
     anthropic.BadRequestError, "messages[0].content[0].source.type"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, anthropic.BadRequestError,
     "thinking.budget_tokens"),
    ({"extra_body": {"routebandit": {"weights": {"cost": "x"}}}},
     anthropic.BadRequestError, "routebandit.weights.cost"),
], ids=["model", "max_tokens", "document", "thinking", "routebandit"])
def test_refusals_in_anthropics_shape_name_the_field(
        stack: Stack, client: anthropic.Anthropic, kwargs: dict[str, Any],
        error: type[Exception], words: str) -> None:
    args: dict[str, Any] = {"model": "auto", "max_tokens": 64, "messages": USER, **kwargs}
    with pytest.raises(error) as exc:
        client.messages.create(**args)
    assert isinstance(exc.value, anthropic.APIStatusError)
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert words in body["error"]["message"]
    assert stack.fakes["mid"].log.requests == []


@pytest.mark.parametrize(("body", "headers", "status", "kind"), [
    ({"model": "auto", "messages": USER}, {}, 400, "invalid_request_error"),
    ({"model": "auto", "max_tokens": 5, "messages": USER}, {"anthropic-version": "v1"}, 400,
     "invalid_request_error"),
    (None, {}, 400, "invalid_request_error"),
], ids=["max_tokens_missing", "bad_version", "not_json"])
def test_raw_refusals(stack: Stack, body: Any, headers: dict[str, str], status: int,
                      kind: str) -> None:
    content = b'{"model": ' if body is None else None
    r = httpx.post(f"{stack.server.url}/v1/messages", json=body, content=content,
                   headers={"content-type": "application/json", **headers})
    assert r.status_code == status
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind


def test_every_model_overloaded_is_529(stack: Stack, client: anthropic.Anthropic) -> None:
    for fake in stack.fakes.values():
        fake.behavior.fail_status, fake.behavior.retry_after = 503, "1"
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model="auto", max_tokens=64, messages=USER)
    assert exc.value.status_code == 529
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["type"] == "overloaded_error"


def test_an_upstream_failure_mid_stream_ends_with_an_error_event(
        stack: Stack, client: anthropic.Anthropic) -> None:
    stack.fakes["mid"].behavior.break_after_chunks = 2
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        with client.messages.stream(model="auto", max_tokens=64, messages=USER) as stream:
            seen.extend(stream.text_stream)
    assert "".join(seen) == "The quick"
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["error"]["type"] == "api_error"
    assert "upstream_" in exc.value.body["error"]["message"]
    [outcome] = stack.outcomes(stack.router.routes[-1][0])
    assert outcome.status == "error"
