"""A catalog model with ``api: anthropic`` is called in Anthropic's own protocol
(serving/native_anthropic.py): the fake Anthropic upstream checked with the official SDK
first, then every door of the gateway in front of it, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from bandit import Catalog
from serving.cooldown import Cooldown
from serving.egress import DEVELOPMENT
from serving.gateway import Gateway, GatewayConfig
from serving.native_anthropic import MessagesStream, to_completion, to_messages
from serving.upstream import Upstream, new_client
from tests.fakes.fake_anthropic import TEXT, FakeAnthropic
from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.fakes.stub_router import StubRouter
from tests.serving.gateway_stack import FakeClock, gateway_app, wait_until

KEY_ENV = "FAKE_ANTHROPIC_API_KEY"
USER = [{"role": "user", "content": "Tell me about foxes"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}


class Native:
    def __init__(self, claude: FakeAnthropic, mid: FakeUpstream) -> None:
        catalog = Catalog.from_dict({"models": [
            {"name": "claude", "api": "anthropic", "base_url": claude.base_url,
             "api_key_env": KEY_ENV, "upstream_model": "claude-wire", "input_price": 3.0,
             "output_price": 15.0, "capabilities": ["tools", "vision"]},
            {"name": "mid", "base_url": mid.base_url, "api_key_env": KEY_ENV,
             "upstream_model": "mid-wire", "input_price": 1.0, "output_price": 4.0,
             "capabilities": ["tools"]}]})
        self.router = StubRouter(catalog, preference=["claude", "mid"])
        client = new_client(transport="aiohttp", egress=DEVELOPMENT)
        self.gateway = Gateway(router=self.router, config=GatewayConfig(),
                               upstream=Upstream(client, env={KEY_ENV: "sk-ant-fake"},
                                                 egress=DEVELOPMENT),
                               cooldown=Cooldown(failures=3, seconds=30, clock=FakeClock()))
        self.server = ServerThread(gateway_app(self.gateway, client.aclose))
        self.server.start()
        self.openai = openai.OpenAI(base_url=f"{self.server.url}/v1", api_key="k",
                                    max_retries=0, timeout=10)
        self.anthropic = anthropic.Anthropic(base_url=self.server.url, api_key="k",
                                             max_retries=0, timeout=10)

    def outcome(self) -> Any:
        decision_id = self.router.routes[-1][0]
        wait_until(lambda: bool(self.router.outcomes.get(decision_id)))
        return self.router.outcomes[decision_id][-1]

    def stop(self) -> None:
        self.openai.close()
        self.anthropic.close()
        self.server.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAnthropic, FakeUpstream]]:
    claude, mid = FakeAnthropic().start(), FakeUpstream(name="mid").start()
    yield claude, mid
    claude.stop()
    mid.stop()


@pytest.fixture(scope="module")
def module_native(fakes: tuple[FakeAnthropic, FakeUpstream]) -> Iterator[Native]:
    n = Native(*fakes)
    yield n
    n.stop()


@pytest.fixture
def native(module_native: Native, fakes: tuple[FakeAnthropic, FakeUpstream]) -> Native:
    fakes[0].reset()
    fakes[1].behavior.fail_status = None
    fakes[1].log.requests.clear()
    module_native.router.routes.clear()
    return module_native


@pytest.fixture
def claude(fakes: tuple[FakeAnthropic, FakeUpstream]) -> FakeAnthropic:
    return fakes[0]


def test_the_fake_speaks_anthropic_to_the_official_sdk(claude: FakeAnthropic) -> None:
    claude.reset()
    with anthropic.Anthropic(base_url=claude.root_url, api_key="x", max_retries=0) as sdk:
        msg = sdk.messages.create(model="m", max_tokens=10, messages=USER)
        assert msg.content[0].type == "text" and msg.content[0].text == TEXT
        with sdk.messages.stream(model="m", max_tokens=10, messages=USER) as stream:
            final = stream.get_final_message()
        assert final.content[0].type == "text" and final.content[0].text == TEXT
        assert final.usage.input_tokens == 11
        claude.behavior.tool_call = {"name": "get_weather", "input": {"city": "Paris"}}
        with sdk.messages.stream(model="m", max_tokens=10, messages=USER) as stream:
            final = stream.get_final_message()
        block = final.content[0]
        assert block.type == "tool_use" and block.input == {"city": "Paris"}


def test_chat_door_to_a_native_anthropic_model(native: Native, claude: FakeAnthropic) -> None:
    resp = native.openai.chat.completions.create(
        model="auto", messages=[{"role": "system", "content": "Be brief"}, *USER])
    assert resp.model == "claude" and resp.choices[0].message.content == TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == 11
    sent = claude.log.requests[-1]
    assert sent == {"model": "claude-wire", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Tell me about foxes"}]}],
        "max_tokens": 4096, "system": "Be brief"}
    assert claude.log.headers[-1] == {"x-api-key": "sk-ant-fake",
                                      "anthropic-version": "2023-06-01"}
    outcome = native.outcome()
    assert (outcome.status, outcome.input_tokens, outcome.tokens_estimated) == ("ok", 11,
                                                                                False)


def test_streams_and_tool_calls_through_every_door(native: Native,
                                                   claude: FakeAnthropic) -> None:
    chunks = list(native.openai.chat.completions.create(model="auto", messages=USER,
                                                        stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert native.outcome().ttft_ms is not None
    claude.behavior.tool_call = {"name": "get_weather", "input": {"city": "Paris"}}
    resp = native.openai.chat.completions.create(model="auto", messages=USER,
                                                 tools=[WEATHER], tool_choice="required")
    [call] = resp.choices[0].message.tool_calls or []
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "Paris"})
    sent = claude.log.requests[-1]
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    with native.anthropic.messages.stream(model="auto", max_tokens=64, messages=USER,
                                          tools=[{"name": "get_weather",
                                                  "input_schema": {"type": "object"}}]) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    claude.behavior.tool_call = None
    with native.openai.responses.stream(model="auto", input="foxes") as stream:
        assert stream.get_final_response().output_text == TEXT


def test_an_overloaded_anthropic_model_fails_over(native: Native,
                                                  claude: FakeAnthropic) -> None:
    claude.behavior.fail_status = 529
    resp = native.openai.chat.completions.create(model="auto", messages=USER)
    assert resp.model == "mid"
    assert len(claude.log.requests) == 1


def test_a_native_stream_cut_short_ends_with_the_doors_error_event(
        native: Native, claude: FakeAnthropic) -> None:
    claude.behavior.break_after_chunks = 2
    with pytest.raises(openai.APIError):
        list(native.openai.chat.completions.create(model="auto", messages=USER, stream=True))
    assert native.outcome().status == "error"


def test_translation_golden() -> None:
    sent = to_messages({"model": "w", "max_completion_tokens": 9, "stop": "END", "user": "u",
                        "parallel_tool_calls": False, "tools": [WEATHER],
                        "tool_choice": {"type": "function",
                                        "function": {"name": "get_weather"}},
                        "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks"}]})
    assert sent["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "c1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
            {"type": "text", "text": "thanks"}]}]
    assert (sent["max_tokens"], sent["stop_sequences"], sent["metadata"]) == (
        9, ["END"], {"user_id": "u"})
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather",
                                   "disable_parallel_tool_use": True}
    body = to_completion({"id": "m", "content": [{"type": "text", "text": "x"}],
                          "stop_reason": "max_tokens",
                          "usage": {"input_tokens": 3, "output_tokens": 2}}, "claude")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    stream = MessagesStream("claude")
    assert stream.event({"type": "message_delta", "delta": {"stop_reason": "stop_sequence"},
                         "usage": {"output_tokens": 1}})[0]["choices"][0][
        "finish_reason"] == "stop"


def test_json_output_thinking_and_documents_reach_anthropic_in_its_terms() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "required": ["a"], "additionalProperties": False}
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    body = to_messages({
        "model": "claude", "max_tokens": 500, "reasoning_effort": "high",
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "out", "schema": schema}},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Summarise"},
            {"type": "file", "file": {"file_data": pdf, "filename": "report.pdf"}}]}]})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    # Anthropic counts the thinking in max_tokens: the answer keeps its 500
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["max_tokens"] == 500 + 16384
    assert body["messages"][0]["content"][1] == {
        "type": "document", "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}
    plain = to_messages({"model": "claude", "response_format": {"type": "json_object"},
                         "messages": [{"role": "user", "content": "hi"}]})
    assert plain["output_config"]["format"]["schema"] == {"type": "object"}
    assert "thinking" not in plain


def test_a_file_by_id_cannot_reach_anthropic_and_the_model_is_skipped() -> None:
    from bandit.catalog import ModelSpec
    from serving.native_anthropic import NativeFault
    from serving.upstream import _NATIVE, UpstreamConfigError, _native_request

    payload = {"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-abc"}}]}]}
    with pytest.raises(NativeFault, match="file_data"):
        to_messages(payload)
    spec = ModelSpec(name="claude", api="anthropic", base_url="https://api.anthropic.com/v1")
    with pytest.raises(UpstreamConfigError, match="claude: .*file_data") as caught:
        _native_request(_NATIVE["anthropic"], spec, payload)
    assert caught.value.retryable  # another model may take it


def test_thinking_is_not_relayed() -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "end_turn",
            "content": [{"type": "thinking", "thinking": "let me see", "signature": "s"},
                        {"type": "text", "text": "42"}],
            "usage": {"input_tokens": 10, "output_tokens": 30}}
    assert to_completion(body, "claude")["choices"][0]["message"]["content"] == "42"
    stream = MessagesStream("claude")
    chunks = []
    for event in (
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 10}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "secret steps"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ):
        chunks += stream.event(event)
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c["choices"])
    assert text == "42" and "secret" not in json.dumps(chunks)
