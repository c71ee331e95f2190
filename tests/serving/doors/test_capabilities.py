"""Capabilities from the request, on every door of the real app: a request that needs
audio, a file, reasoning, JSON output, tools, a long output or a long context reaches only
models the catalog says can serve it (checked over many requests, so that exploration had
its chances), and when none may, the client gets a 400 naming what is missing, in its
door's shape. Official SDKs, real HTTP, fake upstreams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from serving.app import create_app
from serving.settings import load_settings
from tests.fakes.fake_upstream import FakeUpstream
from tests.fakes.server import ServerThread
from tests.serving.gateway_stack import KEY, KEY_ENV, reset

# name -> (fake, capabilities, context window, max output tokens or None)
MODELS: dict[str, tuple[str, list[str], int, int | None]] = {
    "plain": ("cheap", [], 8192, None),
    "seer": ("cheap", ["vision", "file", "json", "tools"], 32000, 2048),
    "thinker": ("mid", ["reasoning", "tools", "json"], 64000, 16000),
    "listener": ("big", ["audio", "vision", "file"], 128000, 4096),
}
REQUESTS = 12  # per door and need: the policy explores, so each has several chances
PDF = "data:application/pdf;base64,JVBERi0xLjQK"
PNG = "data:image/png;base64,iVBORw0KGgo="
WAV = "UklGRiQAAABXQVZF"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
LONG = "word " * 12_000  # about 15,000 tokens: more than plain's window of 8,192


def holders(need: str) -> set[str]:
    """The models that can serve a request with this need."""
    if need == "max_output":  # 9,000 tokens of answer: thinker's 16,000 only
        return {"thinker"}
    if need == "context":  # a long prompt: every window but plain's
        return {"seer", "thinker", "listener"}
    return {name for name, (_, caps, _, _) in MODELS.items() if need in caps}


# What each door's request asks, and the capability (or limit) the 400 names. Anthropic's
# Messages API has no audio parts and no JSON output format: those needs come by the other
# two doors only.
NAMED = {"vision": "vision", "audio": "audio", "file": "file", "reasoning": "reasoning",
         "json": "json", "tools": "tools", "max_output": "max_output_tokens",
         "context": "context_window"}


def chat_args(need: str, text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    args: dict[str, Any] = {}
    if need == "vision":
        parts.append({"type": "image_url", "image_url": {"url": PNG}})
    elif need == "audio":
        parts.append({"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}})
    elif need == "file":
        parts.append({"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}})
    elif need == "reasoning":
        args["reasoning_effort"] = "low"
    elif need == "json":
        args["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": SCHEMA}}
    elif need == "tools":
        args["tools"] = [{"type": "function", "function": {
            "name": "get_weather", "parameters": SCHEMA}}]
    elif need == "max_output":
        args["max_completion_tokens"] = 9000
    elif need == "context":
        parts[0]["text"] = text + " " + LONG
    return {"messages": [{"role": "user", "content": parts}], **args}


def responses_args(need: str, text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
    args: dict[str, Any] = {}
    if need == "vision":
        parts.append({"type": "input_image", "image_url": PNG})
    elif need == "audio":
        parts.append({"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}})
    elif need == "file":
        parts.append({"type": "input_file", "file_data": PDF, "filename": "a.pdf"})
    elif need == "reasoning":
        args["reasoning"] = {"effort": "low"}
    elif need == "json":
        args["text"] = {"format": {"type": "json_schema", "name": "answer",
                                   "schema": SCHEMA}}
    elif need == "tools":
        args["tools"] = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
    elif need == "max_output":
        args["max_output_tokens"] = 9000
    elif need == "context":
        parts[0]["text"] = text + " " + LONG
    return {"input": [{"role": "user", "content": parts}], **args}


def messages_args(need: str, text: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}]
    args: dict[str, Any] = {"max_tokens": 64}
    if need == "vision":
        blocks.append({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                   "data": PNG.split(",")[1]}})
    elif need == "file":
        blocks.append({"type": "document", "title": "a.pdf", "source": {
            "type": "base64", "media_type": "application/pdf", "data": PDF.split(",")[1]}})
    elif need == "reasoning":
        args.update(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024})
    elif need == "tools":
        args["tools"] = [{"name": "get_weather", "input_schema": SCHEMA}]
    elif need == "max_output":
        args["max_tokens"] = 9000
    elif need == "context":
        blocks[0]["text"] = text + " " + LONG
    return {"messages": [{"role": "user", "content": blocks}], **args}


DOOR_NEEDS = {
    "chat": list(NAMED),
    "responses": list(NAMED),
    "messages": [n for n in NAMED if n not in ("audio", "json")],
}
CASES = [(door, need) for door, needs in DOOR_NEEDS.items() for need in needs]


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app (development mode) on the capability catalog; yields its URL."""
    tmp: Path = tmp_path_factory.mktemp("capabilities")
    lines = ["models:"]
    for name, (fake, caps, window, out) in MODELS.items():
        lines.append(f"  - {{name: {name}, base_url: '{fakes[fake].base_url}', "
                     f"api_key_env: {KEY_ENV}, upstream_model: {name}-wire, "
                     f"input_price: 1.0, output_price: 2.0, context_window: {window}, "
                     f"capabilities: [{', '.join(caps)}]"
                     + ("" if out is None else f", max_output_tokens: {out}") + "}")
    (tmp / "catalog.yaml").write_text("\n".join(lines) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        settings = load_settings(catalog=str(tmp / "catalog.yaml"), data_dir=str(tmp),
                                 flush_interval_ms=10)
        server = ServerThread(create_app(settings))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
def openai_client(gateway: str, fakes: dict[str, FakeUpstream]) -> Iterator[openai.OpenAI]:
    for fake in fakes.values():
        reset(fake)
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0,
                       timeout=20) as client:
        yield client


@pytest.fixture
def anthropic_client(gateway: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway, api_key="k", max_retries=0,
                             timeout=20) as client:
        yield client


Send = Callable[[str, dict[str, Any]], str]  # (model, args) -> the catalog model that answered


def _sender(door: str, oa: openai.OpenAI, an: anthropic.Anthropic) -> Send:
    def send(model: str, args: dict[str, Any]) -> str:
        if door == "chat":
            raw: Any = oa.chat.completions.with_raw_response.create(model=model, **args)
        elif door == "responses":
            raw = oa.responses.with_raw_response.create(model=model, **args)
        else:
            raw = an.messages.with_raw_response.create(model=model, **args)
        return str(raw.headers["x-routebandit-model"])

    return send


ARGS = {"chat": chat_args, "responses": responses_args, "messages": messages_args}


@pytest.mark.parametrize(("door", "need"), CASES, ids=[f"{d}-{n}" for d, n in CASES])
def test_a_request_reaches_only_models_that_can_serve_it(
        door: str, need: str, openai_client: openai.OpenAI,
        anthropic_client: anthropic.Anthropic) -> None:
    send = _sender(door, openai_client, anthropic_client)
    chosen = [send("auto", ARGS[door](need, f"Question {i} about {need}?"))
              for i in range(REQUESTS)]
    assert set(chosen) <= holders(need), chosen


def test_a_plain_request_may_reach_every_model(openai_client: openai.OpenAI,
                                               anthropic_client: anthropic.Anthropic) -> None:
    # The control: without a need, the policy spreads requests over the whole catalog.
    send = _sender("chat", openai_client, anthropic_client)
    chosen = {send("auto", {"messages": [{"role": "user", "content": f"Hello {i}"}]})
              for i in range(60)}
    assert chosen == set(MODELS)


def _refusal(door: str, oa: openai.OpenAI, an: anthropic.Anthropic, model: str,
             args: dict[str, Any]) -> tuple[int, str, str, str | None]:
    """(status, error type, message, x-routebandit-needs) of a refused request."""
    try:
        _sender(door, oa, an)(model, args)
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        body = exc.response.json()
        needs = exc.response.headers.get("x-routebandit-needs")
        if door == "messages":
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
            return exc.status_code, body["error"]["type"], body["error"]["message"], needs
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, body
        assert err["code"] == "no_eligible_model"
        return exc.status_code, err["type"], err["message"], needs
    raise AssertionError("the request was served")


@pytest.mark.parametrize(("door", "need"), CASES, ids=[f"{d}-{n}" for d, n in CASES])
def test_when_no_model_may_serve_it_the_400_names_the_need(
        door: str, need: str, openai_client: openai.OpenAI,
        anthropic_client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    # The request's own allow-list leaves only models that cannot serve it.
    others = sorted(set(MODELS) - holders(need))
    args = ARGS[door](need, "Can you help?")
    args["extra_body"] = {"routebandit": {"models": others}}
    status, kind, message, needs = _refusal(door, openai_client, anthropic_client, "auto",
                                            args)
    assert (status, kind) == (400, "invalid_request_error")
    assert f"it needs {NAMED[need]}, which no model has" in message, message
    assert needs == NAMED[need]
    assert all(not fake.log.requests for fake in fakes.values())  # no upstream asked


@pytest.mark.parametrize("door", list(ARGS))
def test_a_named_model_without_the_capability_is_refused_too(
        door: str, openai_client: openai.OpenAI,
        anthropic_client: anthropic.Anthropic) -> None:
    status, _, message, needs = _refusal(door, openai_client, anthropic_client, "plain",
                                         ARGS[door]("tools", "Weather in Paris?"))
    assert status == 400 and needs == "tools" and "tools" in message
    assert _sender(door, openai_client, anthropic_client)(
        "seer", ARGS[door]("tools", "Weather in Paris?")) == "seer"


def test_what_the_doors_forward_asks_the_upstream_for_the_same(
        openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic,
        fakes: dict[str, FakeUpstream]) -> None:
    # Reasoning, files and audio reach the upstream in Chat Completions' terms, whichever
    # door they came by.
    for door in ARGS:
        _sender(door, openai_client, anthropic_client)("thinker", ARGS[door]("reasoning", "Hm?"))
    efforts = [r["reasoning_effort"] for r in fakes["mid"].log.requests]
    assert efforts == ["low", "low", "low"]  # a 1,024-token thinking budget is low
    for door in ARGS:
        _sender(door, openai_client, anthropic_client)("seer", ARGS[door]("file", "Summarize"))
    files = [p for r in fakes["cheap"].log.requests for p in r["messages"][-1]["content"]
             if p["type"] == "file"]
    assert [f["file"]["file_data"] for f in files] == [PDF] * 3
    _sender("responses", openai_client, anthropic_client)(
        "listener", responses_args("audio", "Transcribe"))
    [sent] = fakes["big"].log.requests
    assert sent["messages"][-1]["content"][1] == {
        "type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}
