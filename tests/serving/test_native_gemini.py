"""A catalog model with ``api: gemini`` is called in Gemini's own protocol
(serving/native_gemini.py): golden translations both ways, the fake Gemini upstream
checked with the official google-genai SDK, then the gateway's doors in front of it over
real HTTP, failover, and the measured cost with cached-input prices (Gemini's and
Anthropic's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from bandit import Catalog
from serving.calls import Outcome
from serving.cooldown import Cooldown
from serving.egress import DEVELOPMENT
from serving.gateway import Gateway, GatewayConfig, _cache_tokens
from serving.native_anthropic import NativeFault
from serving.native_anthropic import to_completion as anthropic_completion
from serving.native_gemini import (
    SKIP_SIGNATURE,
    GenerateStream,
    method_url,
    retry_delay,
    to_completion,
    to_generate,
)
from serving.upstream import Upstream, new_client
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_gemini import TEXT, FakeGemini
from tests.fakes.fake_upstream import ANSWERS, FakeUpstream
from tests.fakes.server import ServerThread
from tests.fakes.stub_router import StubRouter
from tests.serving.gateway_stack import FakeClock, gateway_app, wait_until

KEY_ENV = "FAKE_GEMINI_API_KEY"
USER = [{"role": "user", "content": "Tell me about foxes"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
# USD per million tokens
GEMINI = {"input_price": 1.25, "output_price": 10.0, "cached_input_price": 0.125}
CLAUDE = {"input_price": 3.0, "output_price": 15.0, "cached_input_price": 0.3,
          "cache_write_price": 3.75}
WORDS = len(TEXT.split())


# -- golden translations ---------------------------------------------------------------

def test_request_golden_every_content_type() -> None:
    sent = to_generate({
        "model": "gemini-wire", "stream": True, "stream_options": {"include_usage": True},
        "max_completion_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stop": "END", "n": 2,
        "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "u",
        "tools": [WEATHER, {"type": "function", "function": {"name": "noop"}}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "w", "schema": {"type": "object"}, "strict": True}},
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg?s=1"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                {"type": "file", "file": {"file_id": "file-1"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "c1", "type": "function", "extra_content": {
                    "google": {"thought_signature": "c2ln"}},
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "c2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": '{"sky": "grey"}'},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_9", "type": "function",
                 "function": {"name": "noop", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "toolu_9",
             "content": [{"type": "text", "text": "done"}]},
            {"role": "user", "content": "thanks"}]})
    assert sent == {
        "contents": [
            {"role": "user", "parts": [
                {"text": "hi"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"fileUri": "https://x.test/cat.jpg?s=1", "mimeType": "image/jpeg"}},
                {"fileData": {"fileUri": "https://x.test/cat"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}]},
            {"role": "model", "parts": [
                {"text": "Let me look."},
                {"functionCall": {"id": "c1", "name": "get_weather",
                                  "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"id": "c2", "name": "get_weather",
                                  "args": {"city": "Rome"}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "c1", "name": "get_weather",
                                      "response": {"result": "sunny"}}},
                {"functionResponse": {"id": "c2", "name": "get_weather",
                                      "response": {"sky": "grey"}}}]},
            # another model's call: Google's placeholder stands in for its signature
            {"role": "model", "parts": [
                {"functionCall": {"id": "toolu_9", "name": "noop", "args": {}},
                 "thoughtSignature": SKIP_SIGNATURE}]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "toolu_9", "name": "noop",
                                      "response": {"result": "done"}}}]},
            {"role": "user", "parts": [{"text": "thanks"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief"}, {"text": "Be kind"}]},
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "The weather in a city",
             "parametersJsonSchema": WEATHER["function"]["parameters"]},
            {"name": "noop"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {
            "maxOutputTokens": 64, "temperature": 0.2, "topP": 0.9, "seed": 7,
            "presencePenalty": 0.1, "frequencyPenalty": 0.2, "candidateCount": 2,
            "stopSequences": ["END"], "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"}}}


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
], ids=["auto", "none", "required", "named"])
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    sent = to_generate({"messages": USER, "tools": [WEATHER], "tool_choice": choice})
    assert sent["toolConfig"] == {"functionCallingConfig": config}


def test_plain_request_and_json_mode() -> None:
    assert to_generate({"model": "m", "messages": USER, "max_tokens": 5}) == {
        "contents": [{"role": "user", "parts": [{"text": "Tell me about foxes"}]}],
        "generationConfig": {"maxOutputTokens": 5}}
    sent = to_generate({"messages": USER, "response_format": {"type": "json_object"}})
    assert sent["generationConfig"] == {"responseMimeType": "application/json"}


def test_answer_golden_text_tool_calls_and_usage() -> None:
    body = to_completion({
        "responseId": "r1", "modelVersion": "gemini-2.5-flash",
        "candidates": [
            {"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": True},
                {"text": "It is "}, {"text": "sunny."},
                {"functionCall": {"id": "fc1", "name": "get_weather",
                                  "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]}},
            {"index": 1, "finishReason": "MAX_TOKENS",
             "content": {"role": "model", "parts": [{"text": "It is"}]}}],
        "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 600,
                          "candidatesTokenCount": 30, "thoughtsTokenCount": 12,
                          "toolUsePromptTokenCount": 5, "totalTokenCount": 1047}},
        "gemini")
    assert body == {
        "id": "r1", "object": "chat.completion", "model": "gemini", "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "It is sunny.", "refusal": None,
                "tool_calls": [{"id": "fc1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris"}'},
                    "extra_content": {"google": {"thought_signature": "c2ln"}}}]}},
            {"index": 1, "finish_reason": "length", "message": {
                "role": "assistant", "content": "It is", "refusal": None}}],
        "usage": {"prompt_tokens": 1005, "completion_tokens": 42, "total_tokens": 1047,
                  "prompt_tokens_details": {"cached_tokens": 600},
                  "completion_tokens_details": {"reasoning_tokens": 12}}}


@pytest.mark.parametrize(("reason", "finish"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("LANGUAGE", "content_filter"), ("OTHER", "content_filter"),
    ("A_REASON_TO_COME", "content_filter"),
])
def test_finish_reasons(reason: str, finish: str) -> None:
    body = to_completion({"candidates": [{"finishReason": reason, "content": {
        "parts": [{"text": "x"}]}}]}, "gemini")
    assert body["choices"][0]["finish_reason"] == finish
    stream = GenerateStream("gemini")
    chunks = stream.event({"candidates": [{"finishReason": reason, "content": {
        "parts": [{"text": "x"}]}}]})
    assert chunks[-1]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL",
                                    "TOO_MANY_TOOL_CALLS"])
def test_a_failed_generation_is_not_an_answer(reason: str) -> None:
    with pytest.raises(NativeFault) as fault:
        to_completion({"candidates": [{"finishReason": reason}]}, "gemini")
    assert fault.value.error
    with pytest.raises(NativeFault):
        GenerateStream("gemini").event({"candidates": [{"finishReason": reason}]})


def test_blocked_prompts_errors_and_empty_answers() -> None:
    blocked = to_completion({"promptFeedback": {"blockReason": "SAFETY"},
                             "usageMetadata": {"promptTokenCount": 8}}, "gemini")
    assert blocked["choices"] == [{"index": 0, "finish_reason": "content_filter", "message": {
        "role": "assistant", "content": None, "refusal": None}}]
    assert blocked["usage"]["prompt_tokens"] == 8
    with pytest.raises(NativeFault) as fault:
        to_completion({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, "g")
    assert fault.value.error and "boom (INTERNAL)" in str(fault.value)
    with pytest.raises(NativeFault) as fault:
        to_completion({"candidates": []}, "gemini")
    assert not fault.value.error
    with pytest.raises(NativeFault, match="no finishReason"):
        to_completion({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}, "gemini")


def test_stream_golden() -> None:
    stream = GenerateStream("gemini")
    usage = {"promptTokenCount": 100, "cachedContentTokenCount": 40}
    out = stream.event({"responseId": "r", "usageMetadata": {**usage,
                                                             "candidatesTokenCount": 1},
                        "candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})
    out += stream.event({})  # a comment
    out += stream.event({"responseId": "r", "candidates": [{"content": {"parts": [
        {"text": "lo"}, {"functionCall": {"name": "f", "args": {"a": 1}}}]},
        "finishReason": "STOP"}], "usageMetadata": {**usage, "candidatesTokenCount": 3}})
    assert not stream.done
    out += stream.end()
    assert stream.done
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) if c["choices"]
              else c["usage"] for c in out]
    [call] = deltas[3][0]["tool_calls"]  # type: ignore[index]
    assert call["id"].startswith("call_")
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                          "function": {"name": "f", "arguments": '{"a": 1}'}}]}, None),
        ({}, "tool_calls"),
        {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103,
         "prompt_tokens_details": {"cached_tokens": 40}}]
    assert {c["id"] for c in out} == {"r"} and {c["model"] for c in out} == {"gemini"}


def test_a_stream_is_an_answer_only_when_every_candidate_finished() -> None:
    cut = GenerateStream("gemini")
    cut.event({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})
    with pytest.raises(NativeFault, match="without a finishReason"):
        cut.end()
    with pytest.raises(NativeFault, match="without a finishReason"):
        GenerateStream("gemini").end()
    two = GenerateStream("gemini")
    two.event({"candidates": [{"index": 0, "finishReason": "STOP"},
                              {"index": 1, "content": {"parts": [{"text": "a"}]}}]})
    with pytest.raises(NativeFault, match="candidate 1"):
        two.end()
    with pytest.raises(NativeFault) as fault:
        GenerateStream("gemini").event({"error": {"code": 503, "message": "busy"}})
    assert fault.value.error
    blocked = GenerateStream("gemini")
    assert blocked.event({"promptFeedback": {"blockReason": "OTHER"}})[-1]["choices"][0][
        "finish_reason"] == "content_filter"
    assert blocked.end() == []


def test_urls_and_retry_delays() -> None:
    base = "https://generativelanguage.googleapis.com/v1beta"
    assert method_url(base, "gemini-2.5-flash", stream=False) == \
        f"{base}/models/gemini-2.5-flash:generateContent"
    assert method_url(base, "models/gemini-2.5-flash", stream=True) == \
        f"{base}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert method_url(base, "tunedModels/my model", stream=False) == \
        f"{base}/tunedModels/my%20model:generateContent"
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
    assert retry_delay(json.dumps({"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"}, info]}}).encode()) == "37"
    assert retry_delay(json.dumps([{"error": {"details": [info]}}]).encode()) == "37"
    assert retry_delay(b"not json") is None
    assert retry_delay(b'{"error": {"code": 503}}') is None


def test_anthropic_cache_tokens_reach_the_chat_usage() -> None:
    body = anthropic_completion({"id": "m", "content": [{"type": "text", "text": "x"}],
                                 "stop_reason": "end_turn", "usage": {
                                     "input_tokens": 50, "cache_read_input_tokens": 900,
                                     "cache_creation_input_tokens": 100,
                                     "output_tokens": 7}}, "claude")
    # Anthropic's input_tokens leave the cache out; prompt_tokens counts it all
    assert body["usage"] == {"prompt_tokens": 1050, "completion_tokens": 7,
                             "total_tokens": 1057, "prompt_tokens_details": {
                                 "cached_tokens": 900, "cache_write_tokens": 100}}


@pytest.mark.parametrize(("usage", "tokens"), [
    ({"prompt_tokens": 10, "completion_tokens": 1}, (0, 0)),
    ({"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1536}}, (1536, 0)),
    ({"prompt_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 3}}, (5, 3)),
    ({"prompt_tokens_details": {"cached_tokens": None, "audio_tokens": 4}}, (0, 0)),
    ({"prompt_tokens_details": "garbage"}, (0, 0)),
], ids=["none", "openai", "anthropic-shaped", "null", "garbage"])
def test_cache_tokens_of_a_chat_usage(usage: dict[str, Any], tokens: tuple[int, int]) -> None:
    assert _cache_tokens(usage) == tokens


# -- the fake, checked with the official SDK -------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeGemini, FakeAnthropic, FakeUpstream]]:
    gemini, claude = FakeGemini().start(), FakeAnthropic().start()
    mid = FakeUpstream(name="mid").start()
    yield gemini, claude, mid
    gemini.stop()
    claude.stop()
    mid.stop()


@pytest.fixture
def gemini(fakes: tuple[FakeGemini, FakeAnthropic, FakeUpstream]) -> FakeGemini:
    return fakes[0]


def test_the_fake_speaks_gemini_to_the_official_sdk(gemini: FakeGemini) -> None:
    gemini.reset()
    gemini.behavior.cached_tokens = 600
    client = genai.Client(api_key="gm-x", http_options=genai_types.HttpOptions(
        base_url=gemini.root_url, retry_options=genai_types.HttpRetryOptions(attempts=1)))
    resp = client.models.generate_content(model="gemini-x", contents="Tell me about foxes")
    assert resp.text == TEXT
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.cached_content_token_count == 600
    assert resp.usage_metadata.prompt_token_count == 1000
    pieces = list(client.models.generate_content_stream(model="gemini-x", contents="foxes"))
    assert "".join(p.text or "" for p in pieces) == TEXT
    assert pieces[-1].candidates and pieces[-1].candidates[0].finish_reason == "STOP"
    gemini.behavior.function_call = {"name": "get_weather", "args": {"city": "Paris"}}
    gemini.behavior.thought_signature = "c2lnbmF0dXJl"
    resp = client.models.generate_content(model="gemini-x", contents="weather?")
    [call] = resp.function_calls or []
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    [streamed] = list(client.models.generate_content_stream(model="gemini-x",
                                                            contents="weather?"))
    assert streamed.function_calls and streamed.function_calls[0].name == "get_weather"
    gemini.behavior.fail_status, gemini.behavior.retry_delay = 429, "7s"
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="gemini-x", contents="x")
    assert (err.value.code, err.value.status) == (429, "RESOURCE_EXHAUSTED")
    gemini.behavior.fail_status = 503
    with pytest.raises(genai_errors.ServerError) as server_err:
        client.models.generate_content(model="gemini-x", contents="x")
    assert server_err.value.status == "UNAVAILABLE"
    assert gemini.log.headers[0] == {"x-goog-api-key": "gm-x"}
    assert gemini.log.paths[:2] == ["gemini-x:generateContent",
                                    "gemini-x:streamGenerateContent?alt=sse"]


# -- the gateway in front of it ----------------------------------------------------------

class Stack:
    """The gateway's doors over real HTTP, in front of a Gemini model (preferred), an
    OpenAI-compatible one (``mid``, next) and an Anthropic one (``claude``, by name)."""

    def __init__(self, gemini: FakeGemini, claude: FakeAnthropic, mid: FakeUpstream) -> None:
        catalog = Catalog.from_dict({"models": [
            {"name": "gemini", "api": "gemini", "base_url": gemini.base_url,
             "api_key_env": KEY_ENV, "upstream_model": "gemini-wire",
             "capabilities": ["tools", "vision", "json"], **GEMINI},
            {"name": "mid", "base_url": mid.base_url, "api_key_env": KEY_ENV,
             "upstream_model": "mid-wire", "input_price": 1.0, "output_price": 4.0,
             "capabilities": ["tools", "json"]},
            {"name": "claude", "api": "anthropic", "base_url": claude.base_url,
             "api_key_env": KEY_ENV, "upstream_model": "claude-wire",
             "capabilities": ["tools"], **CLAUDE}]})
        self.router = StubRouter(catalog, preference=["gemini", "mid", "claude"])
        self.clock = FakeClock()
        client = new_client(transport="aiohttp", egress=DEVELOPMENT)
        self.gateway = Gateway(router=self.router, config=GatewayConfig(),
                               upstream=Upstream(client, env={KEY_ENV: "gm-fake"},
                                                 egress=DEVELOPMENT),
                               cooldown=Cooldown(failures=3, seconds=30, clock=self.clock))
        self.server = ServerThread(gateway_app(self.gateway, client.aclose))
        self.server.start()
        self.openai = openai.OpenAI(base_url=f"{self.server.url}/v1", api_key="k",
                                    max_retries=0, timeout=10)
        self.anthropic = anthropic.Anthropic(base_url=self.server.url, api_key="k",
                                             max_retries=0, timeout=10)

    def outcomes(self, n: int = 1) -> list[Outcome]:
        """The outcomes of the last ``n`` decisions, oldest first."""
        ids = [decision_id for decision_id, _ in self.router.routes[-n:]]
        wait_until(lambda: all(self.router.outcomes.get(i) for i in ids))
        return [self.router.outcomes[i][-1] for i in ids]

    def stop(self) -> None:
        self.openai.close()
        self.anthropic.close()
        self.server.stop()


@pytest.fixture(scope="module")
def module_stack(fakes: tuple[FakeGemini, FakeAnthropic, FakeUpstream]) -> Iterator[Stack]:
    s = Stack(*fakes)
    yield s
    s.stop()


@pytest.fixture
def stack(module_stack: Stack, fakes: tuple[FakeGemini, FakeAnthropic, FakeUpstream]) -> Stack:
    fakes[0].reset()
    fakes[1].reset()
    fakes[2].behavior.fail_status = None
    fakes[2].log.requests.clear()
    module_stack.router.routes.clear()
    module_stack.clock.now += 3600  # whatever an earlier test's refusal held back is back
    return module_stack


def gemini_cost(*, prompt: int, cached: int, output: int) -> float:
    return ((prompt - cached) * GEMINI["input_price"] + cached * GEMINI["cached_input_price"]
            + output * GEMINI["output_price"]) / 1e6


def test_chat_door_to_a_native_gemini_model(stack: Stack, gemini: FakeGemini) -> None:
    gemini.behavior.cached_tokens = 600
    resp = stack.openai.chat.completions.create(
        model="auto", messages=[{"role": "system", "content": "Be brief"}, *USER],
        max_tokens=256, temperature=0)
    assert resp.model == "gemini" and resp.choices[0].message.content == TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == 1000
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 600
    assert gemini.log.requests[-1] == {
        "contents": [{"role": "user", "parts": [{"text": "Tell me about foxes"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief"}]},
        "generationConfig": {"maxOutputTokens": 256, "temperature": 0}}
    assert gemini.log.paths[-1] == "gemini-wire:generateContent"
    assert gemini.log.headers[-1] == {"x-goog-api-key": "gm-fake"}
    [outcome] = stack.outcomes()
    assert (outcome.model, outcome.status, outcome.input_tokens, outcome.output_tokens,
            outcome.tokens_estimated) == ("gemini", "ok", 1000, WORDS, False)
    assert outcome.cost_usd == pytest.approx(gemini_cost(prompt=1000, cached=600,
                                                         output=WORDS))


def test_streamed_chat_counts_thoughts_and_cached_tokens(stack: Stack,
                                                         gemini: FakeGemini) -> None:
    gemini.behavior.cached_tokens, gemini.behavior.thoughts_tokens = 200, 30
    chunks = list(stack.openai.chat.completions.create(
        model="auto", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == WORDS + 30
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 30
    assert gemini.log.paths[-1] == "gemini-wire:streamGenerateContent?alt=sse"
    [outcome] = stack.outcomes()
    assert outcome.status == "ok" and outcome.ttft_ms is not None
    assert outcome.cost_usd == pytest.approx(gemini_cost(prompt=1000, cached=200,
                                                         output=WORDS + 30))


def test_tool_calls_round_trip(stack: Stack, gemini: FakeGemini) -> None:
    gemini.behavior.function_call = {"name": "get_weather", "args": {"city": "Paris"}}
    gemini.behavior.thought_signature = "c2lnbmF0dXJl"
    resp = stack.openai.chat.completions.create(model="auto", messages=USER,
                                                tools=[WEATHER], tool_choice="required")
    assert resp.choices[0].finish_reason == "tool_calls"
    [call] = resp.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "Paris"})
    assert gemini.log.requests[-1]["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    # the conversation goes on with the call (as the SDK returned it) and its result
    gemini.reset()
    stack.openai.chat.completions.create(model="auto", tools=[WEATHER], messages=[
        *USER, resp.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    model_turn, answer = gemini.log.requests[-1]["contents"][1:]
    assert model_turn == {"role": "model", "parts": [
        {"functionCall": {"id": call.id, "name": "get_weather", "args": {"city": "Paris"}},
         "thoughtSignature": "c2lnbmF0dXJl"}]}
    assert answer == {"role": "user", "parts": [{"functionResponse": {
        "id": call.id, "name": "get_weather", "response": {"result": "sunny"}}}]}
    # streamed, the call arrives whole
    gemini.behavior.function_call = {"name": "get_weather", "args": {"city": "Rome"}}
    chunks = list(stack.openai.chat.completions.create(model="auto", messages=USER,
                                                       tools=[WEATHER], stream=True))
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert [json.loads(t.function.arguments or "") for t in calls] == [{"city": "Rome"}]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_the_messages_door_to_a_native_gemini_model(stack: Stack, gemini: FakeGemini) -> None:
    msg = stack.anthropic.messages.create(model="gemini", max_tokens=64, messages=USER,
                                          system="Be brief")
    assert msg.content[0].type == "text" and msg.content[0].text == TEXT
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens == 1000
    assert gemini.log.requests[-1]["systemInstruction"] == {"parts": [{"text": "Be brief"}]}
    with stack.anthropic.messages.stream(model="gemini", max_tokens=64,
                                         messages=USER) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == TEXT
    assert final.usage.output_tokens == WORDS
    gemini.behavior.function_call = {"name": "get_weather", "args": {"city": "Paris"}}
    with stack.anthropic.messages.stream(
            model="gemini", max_tokens=64, messages=USER,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize(("fault", "stream", "status"), [
    ({"fail_status": 503}, False, "error"),
    ({"fail_status": 503}, True, "error"),
    ({"fail_status": 429, "retry_delay": "7s"}, False, "throttled"),
    ({"fail_status": 429, "retry_delay": "7s"}, True, "throttled"),
    ({"break_after_chunks": 0}, True, "error"),
    ({"end_after_chunks": 0}, True, "error"),
], ids=["503", "503-stream", "429-retry-info", "429-retry-info-stream",
        "stream-cut-before-the-first-chunk", "stream-closed-with-nothing"])
def test_a_failing_gemini_model_fails_over(stack: Stack, gemini: FakeGemini,
                                           fault: dict[str, Any], stream: bool,
                                           status: str) -> None:
    for name, value in fault.items():
        setattr(gemini.behavior, name, value)
    if stream:
        chunks = list(stack.openai.chat.completions.create(model="auto", messages=USER,
                                                           stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        model = chunks[0].model
    else:
        resp = stack.openai.chat.completions.create(model="auto", messages=USER)
        text, model = resp.choices[0].message.content or "", resp.model
    assert (model, text) == ("mid", ANSWERS["normal"])
    failed, answered = stack.outcomes(2)
    assert (failed.model, failed.status, answered.model, answered.status) == (
        "gemini", status, "mid", "ok")
    if status == "throttled":  # Google's RetryInfo holds the model back at once
        assert not stack.gateway.cooldown.available("gemini")


@pytest.mark.parametrize("fault", [{"break_after_chunks": 3}, {"end_after_chunks": 3},
                                   {"error_event": True}],
                         ids=["cut", "closed-without-a-finish", "error-event"])
def test_a_gemini_stream_that_stops_short_is_an_error(stack: Stack, gemini: FakeGemini,
                                                      fault: dict[str, Any]) -> None:
    for name, value in fault.items():
        setattr(gemini.behavior, name, value)
    with pytest.raises(openai.APIError):
        list(stack.openai.chat.completions.create(model="auto", messages=USER, stream=True))
    [outcome] = stack.outcomes()
    assert (outcome.model, outcome.status) == ("gemini", "error")


def test_a_gemini_refusal_of_the_request_is_passed_back(stack: Stack,
                                                        gemini: FakeGemini) -> None:
    gemini.behavior.fail_status = 400
    with pytest.raises(openai.BadRequestError) as err:
        stack.openai.chat.completions.create(model="auto", messages=USER)
    assert err.value.body is not None and "INVALID_ARGUMENT" in json.dumps(err.value.body)
    [outcome] = stack.outcomes()
    assert outcome.status == "client_error"


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_cache_reads_and_writes_are_charged_at_their_prices(
        stack: Stack, fakes: tuple[FakeGemini, FakeAnthropic, FakeUpstream],
        stream: bool) -> None:
    claude = fakes[1]
    claude.behavior.cache_read, claude.behavior.cache_write = 900, 100
    if stream:
        chunks = list(stack.openai.chat.completions.create(
            model="claude", messages=USER, stream=True,
            stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = stack.openai.chat.completions.create(model="claude", messages=USER).usage
    assert usage is not None and usage.prompt_tokens == 11 + 900 + 100
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 900
    [outcome] = stack.outcomes()
    assert (outcome.model, outcome.status, outcome.input_tokens) == ("claude", "ok", 1011)
    assert outcome.cost_usd == pytest.approx(
        (11 * CLAUDE["input_price"] + 900 * CLAUDE["cached_input_price"]
         + 100 * CLAUDE["cache_write_price"] + WORDS * CLAUDE["output_price"]) / 1e6)
