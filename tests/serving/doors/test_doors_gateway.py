"""The gateway's machinery through the other doors: a streamed cascade (a fresh Wire for
each attempt, so the client sees one coherent stream), an upstream's refusal retold in
each door's shape, and a client that hangs up mid-stream let go."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.serving.gateway_stack import Stack, wait_until

FULL = "The quick brown fox jumps over the lazy dog."
USER = [{"role": "user", "content": "Tell me about foxes"}]


def _events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in raw.splitlines()
            if line.startswith("data: ")]


def test_a_streamed_cascade_is_one_coherent_stream_on_each_door(stack: Stack) -> None:
    # The cheapest model refuses (fails its check), the next one answers: the client gets
    # only the second attempt's events, written by a Wire of its own.
    stack.fakes["cheap"].behavior.answer = "refusal"
    ext = {"routebandit": {"cascade": True}}
    r = httpx.post(f"{stack.server.url}/v1/responses", timeout=10,
                   json={"model": "auto", "input": USER, "stream": True, **ext})
    assert r.headers["x-routebandit-model"] == "mid"
    assert len(stack.fakes["cheap"].log.requests) == 1  # tried first, checked, discarded
    events = _events(r.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events].count("response.created") == 1
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == FULL
    r = httpx.post(f"{stack.server.url}/v1/messages", timeout=10,
                   json={"model": "auto", "max_tokens": 64, "messages": USER, "stream": True,
                         **ext})
    kinds = [e["type"] for e in _events(r.text)]
    assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop"
    assert r.headers["x-routebandit-model"] == "mid"


def test_an_upstream_refusal_is_retold_in_each_doors_shape(stack: Stack) -> None:
    stack.fakes["mid"].behavior.fail_status = 400
    with pytest.raises(openai.BadRequestError) as oa:
        stack.sdk().responses.create(model="auto", input="foxes")
    assert isinstance(oa.value.body, dict)
    assert oa.value.body["message"] == "fake upstream error 400"
    with anthropic.Anthropic(base_url=stack.server.url, api_key="k", max_retries=0,
                             timeout=10) as client, pytest.raises(
            anthropic.BadRequestError) as an:
        client.messages.create(model="auto", max_tokens=64, messages=USER)
    assert an.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "fake upstream error 400"}}
    assert an.value.response.headers["x-routebandit-model"] == "mid"


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
def test_a_client_that_hangs_up_mid_stream_is_let_go(stack: Stack, path: str) -> None:
    mid = stack.fakes["mid"]
    mid.behavior.chunk_delay_s = 30.0  # the first chunk comes, then nothing
    body = ({"model": "auto", "input": USER, "stream": True} if path == "/v1/responses"
            else {"model": "auto", "max_tokens": 64, "messages": USER, "stream": True})
    with httpx.Client(base_url=stack.server.url, timeout=10) as http, http.stream(
            "POST", path, json=body) as r:
        next(r.iter_bytes())  # the stream has begun
        left = time.monotonic()
    wait_until(lambda: len(mid.log.disconnects) == 1, timeout=5)
    assert mid.log.disconnects[0] - left < 2.0
    [decision_id] = [d for d, _ in stack.router.routes]
    [outcome] = stack.outcomes(decision_id)
    assert outcome.status == "cancelled"
    assert not stack.fakes["big"].log.requests  # no failover for nobody
