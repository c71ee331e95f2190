"""Settings: flags > environment > config file > defaults, and errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.settings import SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings()
    assert (s.host, s.port, s.default_profile) == ("127.0.0.1", 8000, "balanced")
    assert s.resolved_database_url.endswith(".routebandit/routebandit.db")
    assert {"quality", "balanced", "cheap"} <= set(s.profiles)


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    cfg = tmp_path / f"routebandit{suffix}"
    if suffix == ".toml":
        cfg.write_text('port = 9001\nhost = "127.0.0.2"\n[profiles.fast]\nlatency = 1.0\n')
    else:
        cfg.write_text('port: 9001\nhost: "127.0.0.2"\nprofiles:\n  fast: {latency: 1.0}\n')
    monkeypatch.setenv("ROUTEBANDIT_CONFIG", str(cfg))
    s = load_settings()
    assert (s.port, s.host, s.profiles["fast"].latency) == (9001, "127.0.0.2", 1.0)
    assert "balanced" in s.profiles  # configured profiles add to the defaults
    monkeypatch.setenv("ROUTEBANDIT_PORT", "9002")
    assert load_settings().port == 9002
    assert load_settings(port=9003).port == 9003


@pytest.mark.parametrize(("env", "value", "message"), [
    ("ROUTEBANDIT_PORT", "70000", "setting 'port' (--port / ROUTEBANDIT_PORT)"),
    ("ROUTEBANDIT_PORT", "eighty", "setting 'port'"),
    ("ROUTEBANDIT_FLUSH_INTERVAL_MS", "5000", "setting 'flush_interval_ms'"),
    ("ROUTEBANDIT_EXPLORATION", "greedy", "setting 'exploration'"),
    ("ROUTEBANDIT_DEFAULT_PROFILE", "posh", "setting 'default_profile'"),
    ("ROUTEBANDIT_STORE_PROMPTS", "maybe", "setting 'store_prompts'"),
    ("ROUTEBANDIT_LOG_LEVEL", "loud", "setting 'log_level'"),
])
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(message)


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="^setting 'config'"):
        load_settings(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("port = [")
    with pytest.raises(SettingsError, match="^setting 'config'"):
        load_settings(tmp_path / "bad.toml")
    (tmp_path / "extra.yaml").write_text("colour: red\n")
    with pytest.raises(SettingsError, match="^setting 'colour'"):
        load_settings(tmp_path / "extra.yaml")
    (tmp_path / "w.yaml").write_text("profiles:\n  odd: {quality: -1}\n")
    with pytest.raises(SettingsError, match="^setting 'profiles.odd.quality'"):
        load_settings(tmp_path / "w.yaml")
