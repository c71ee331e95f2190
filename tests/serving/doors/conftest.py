"""The gateway behind the doors, on real HTTP, with fake upstreams (one per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import Stack, reset, start_stack, started_fakes


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


@pytest.fixture(scope="module")
def module_stack(fakes: dict[str, FakeUpstream]) -> Iterator[Stack]:
    s = start_stack(fakes, preference=["mid", "big", "cheap"], transport="aiohttp")
    yield s
    s.stop()


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    """The module's stack, its fakes and its router's records reset."""
    for fake in module_stack.fakes.values():
        reset(fake)
    module_stack.router.routes.clear()
    module_stack.router.outcomes.clear()
    return module_stack
