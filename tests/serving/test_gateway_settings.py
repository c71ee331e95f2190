"""Gateway settings are nested in the service's (``ROUTEBANDIT_GATEWAY__<NAME>`` or
``gateway:`` in the config file) and validated at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.gateway_settings import gateway_config, upstream_timeouts
from serving.settings import SettingsError, load_settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert gateway_config(load_settings(data_dir=str(tmp_path)).gateway).cache is False
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__CASCADE_PROFILES", '["cheap"]')
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__DEFAULT_QUALITY", "0.6")
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__READ_TIMEOUT_S", "7")
    gs = load_settings(data_dir=str(tmp_path)).gateway
    assert gateway_config(gs).cascade_profiles == frozenset({"cheap"})
    assert gateway_config(gs).default_quality == 0.6
    assert upstream_timeouts(gs).read == 7


def test_the_config_file_sets_them_too(tmp_path: Path) -> None:
    config = tmp_path / "routebandit.yaml"
    config.write_text("gateway:\n  max_attempts: 2\n  cache: true\n")
    gs = load_settings(config, data_dir=str(tmp_path)).gateway
    assert (gs.max_attempts, gs.cache) == (2, True)


def test_invalid_values_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__MAX_ATTEMPTS", "0")
    with pytest.raises(SettingsError, match=r"gateway\.max_attempts.*ROUTEBANDIT_GATEWAY__MAX_"
                                            "ATTEMPTS"):
        load_settings(data_dir=str(tmp_path))


def test_the_old_names_are_refused_with_the_new_one(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    # Before the gateway's settings were nested they were ROUTEBANDIT_GATEWAY_<NAME>: a
    # deployment that still sets one is told, not silently ignored.
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY_MAX_ATTEMPTS", "5")
    with pytest.raises(SettingsError, match="ROUTEBANDIT_GATEWAY__MAX_ATTEMPTS"):
        load_settings(data_dir=str(tmp_path))


def test_time_budgets_and_size_limit_reach_the_gateway(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    gs = load_settings(data_dir=str(tmp_path)).gateway
    config = gateway_config(gs)
    # the defaults docs/gateway.md explains
    assert (config.deadline_s, config.first_byte_timeout_s, config.stream_deadline_s,
            config.max_response_bytes) == (60.0, 5.0, 600.0, 16 * 2**20)
    assert upstream_timeouts(gs).read == 30.0
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__FIRST_BYTE_TIMEOUT_S", "12")
    monkeypatch.setenv("ROUTEBANDIT_GATEWAY__MAX_RESPONSE_BYTES", "1048576")
    config = gateway_config(load_settings(data_dir=str(tmp_path)).gateway)
    assert (config.first_byte_timeout_s, config.max_response_bytes) == (12.0, 2**20)
