"""``POST /v1/responses`` through the official openai SDK (sync and async, create and
stream), a real gateway over HTTP in front of fake upstreams; nothing in the SDK patched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.serving.gateway_stack import Stack

FULL = "The quick brown fox jumps over the lazy dog."
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def test_create_translates_both_ways_and_is_measured(stack: Stack) -> None:
    raw = stack.sdk().responses.with_raw_response.create(
        model="auto", input="Tell me about foxes", instructions="Be brief",
        max_output_tokens=64, temperature=0.3, metadata={"ticket": "42"})
    resp = raw.parse()
    assert (resp.output_text, resp.status, resp.model) == (FULL, "completed", "mid")
    assert resp.metadata == {"ticket": "42"} and resp.id.startswith("resp_")
    assert raw.headers["x-routebandit-model"] == "mid"
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief"},
                                {"role": "user", "content": "Tell me about foxes"}]
    assert (sent["max_tokens"], sent["temperature"], sent["model"]) == (64, 0.3, "mid-wire")
    usage = stack.fakes["mid"].log.usages[-1]
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    [outcome] = stack.outcomes(raw.headers["x-routebandit-decision-id"])
    assert (outcome.status, outcome.model, outcome.tokens_estimated) == ("ok", "mid", False)


def test_stream_helper_gets_typed_events_and_the_final_response(stack: Stack) -> None:
    with stack.sdk().responses.stream(model="auto", input="Tell me about foxes") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == len(FULL.split())
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert final.output_text == FULL and final.usage is not None
    assert final.usage.output_tokens == len(FULL.split())
    decision_id = stack.router.routes[-1][0]
    [outcome] = stack.outcomes(decision_id)
    assert outcome.status == "ok" and outcome.ttft_ms is not None


def test_async_create_and_stream(stack: Stack) -> None:
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="k", max_retries=0,
                                      timeout=10) as client:
            made = await client.responses.create(model="auto", input="foxes")
            events = await client.responses.create(model="auto", input="foxes", stream=True)
            text = "".join([e.delta async for e in events
                            if e.type == "response.output_text.delta"])
            async with client.responses.stream(model="big", input="foxes") as stream:
                final = await stream.get_final_response()
            assert final.model == "big"
            return made.output_text, text

    assert asyncio.run(run()) == (FULL, FULL)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_a_function_call_and_its_output(stack: Stack, streamed: bool) -> None:
    stack.fakes["mid"].behavior.tool_call = {"name": "get_weather",
                                             "arguments": '{"city": "Paris"}'}
    sdk = stack.sdk()
    if streamed:
        with sdk.responses.stream(model="auto", input="Weather in Paris?", tools=[WEATHER],
                                  tool_choice="required") as stream:
            kinds = [e.type for e in stream]
            resp = stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        resp = sdk.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER],
                                    tool_choice="required")
    [call] = resp.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments), call.call_id) == (
        "get_weather", {"city": "Paris"}, "call_fake1")
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "required"
    stack.fakes["mid"].behavior.tool_call = None
    second = sdk.responses.create(model="auto", tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text == FULL
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_fake1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_fake1",
                                   "content": "sunny"}


def test_json_schema_output_and_an_image_input(stack: Stack) -> None:
    stack.fakes["mid"].behavior.answer = "json"
    resp = stack.sdk().responses.create(
        model="auto", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Answer as JSON"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA",
             "detail": "auto"}]}],
        text={"format": {"type": "json_schema", "name": "answer", "strict": True,
                         "schema": {"type": "object",
                                    "properties": {"answer": {"type": "integer"}},
                                    "required": ["answer"], "additionalProperties": False}}})
    assert json.loads(resp.output_text) == {"answer": 42}
    sent = stack.fakes["mid"].log.requests[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "answer"
    assert sent["messages"][0]["content"][1]["type"] == "image_url"


def test_a_length_cut_answer_is_incomplete(stack: Stack) -> None:
    stack.fakes["mid"].behavior.answer = "truncated"
    resp = stack.sdk().responses.create(model="auto", input="foxes", max_output_tokens=5)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"


def test_a_concrete_model_is_honoured_and_failover_works(stack: Stack) -> None:
    assert stack.sdk().responses.create(model="cheap", input="foxes").model == "cheap"
    stack.fakes["mid"].behavior.fail_status = 503
    resp = stack.sdk().responses.create(model="auto", input="foxes")
    assert resp.model == "big" and resp.output_text == FULL


@pytest.mark.parametrize(("kwargs", "error", "param"), [
    ({"previous_response_id": "resp_123"}, openai.BadRequestError, "previous_response_id"),
    ({"store": True}, openai.BadRequestError, "store"),
    ({"model": "no-such-model"}, openai.NotFoundError, "model"),
    ({"tools": [{"type": "web_search"}]}, openai.BadRequestError, "tools[0].type"),
    ({"input": [{"type": "reasoning", "id": "r", "summary": []}]}, openai.BadRequestError,
     "input[0].type"),
    ({"extra_body": {"routebandit": {"weights": {"cost": "x"}}}}, openai.BadRequestError,
     "routebandit.weights.cost"),
], ids=["previous_response_id", "store", "model", "tools", "input", "routebandit"])
def test_refusals_in_openais_shape_name_the_field(
        stack: Stack, kwargs: dict[str, Any], error: type[Exception], param: str) -> None:
    args: dict[str, Any] = {"model": "auto", "input": "foxes", **kwargs}
    with pytest.raises(error) as exc:
        stack.sdk().responses.create(**args)
    assert isinstance(exc.value, openai.APIStatusError)
    body = exc.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert stack.fakes["mid"].log.requests == []


def test_a_body_that_is_not_json_is_refused_in_openais_shape(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/responses", content=b'{"model": "auto", "input": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_an_upstream_failure_mid_stream_ends_with_error_and_response_failed(
        stack: Stack) -> None:
    stack.fakes["mid"].behavior.break_after_chunks = 2
    events = list(stack.sdk().responses.create(model="auto", input="foxes", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    error = events[-2]
    assert error.type == "error" and error.code is not None
    assert error.code.startswith("upstream_")
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    decision_id = stack.router.routes[-1][0]
    [outcome] = stack.outcomes(decision_id)
    assert outcome.status == "error"
