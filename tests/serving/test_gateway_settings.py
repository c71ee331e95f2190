"""Gateway settings come from ROUTEBANDIT_GATEWAY_* and are validated at start-up."""

from __future__ import annotations

import pydantic
import pytest

from serving.gateway_settings import GatewaySettings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySettings().config().cache is False
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_CASCADE_PROFILES", '["cheap"]')
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_DEFAULT_QUALITY", "0.6")
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_READ_TIMEOUT_S", "7")
    gs = GatewaySettings()
    assert gs.config().cascade_profiles == frozenset({"cheap"})
    assert gs.config().default_quality == 0.6
    assert gs.timeouts().read == 7


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_MAX_ATTEMPTS", "0")
    with pytest.raises(pydantic.ValidationError, match="max_attempts"):
        GatewaySettings()


def test_time_budgets_and_size_limit_reach_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    config = GatewaySettings().config()
    # the defaults docs/gateway.md explains
    assert (config.deadline_s, config.first_byte_timeout_s, config.stream_deadline_s,
            config.max_response_bytes) == (60.0, 5.0, 600.0, 16 * 2**20)
    assert GatewaySettings().timeouts().read == 30.0
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_FIRST_BYTE_TIMEOUT_S", "12")
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_MAX_RESPONSE_BYTES", "1048576")
    config = GatewaySettings().config()
    assert (config.first_byte_timeout_s, config.max_response_bytes) == (12.0, 2**20)
