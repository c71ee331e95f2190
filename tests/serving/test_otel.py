"""FastAPI's native OpenTelemetry follows the ``otel`` setting: on, off, or auto (on when
OpenTelemetry is configured when the app is built)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving.app import create_app, fastapi_telemetry, otel_configured
from serving.settings import SettingsError
from tests.serving.conftest import service_settings

needs_native = pytest.mark.skipif(
    not fastapi_telemetry("off"), reason="this FastAPI has no native OpenTelemetry"
)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "FASTAPI_OTEL_AUTO_CONFIGURE":
            monkeypatch.delenv(name)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A configured tracer provider, as the global one (without setting it for good)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    return exporter


async def _route_spans(app: FastAPI, exporter: InMemorySpanExporter) -> list[str]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            r = await client.post("/v1/route", json={"prompt": "Reverse a list"})
            assert r.status_code == 200, r.text
    return [s.name for s in exporter.get_finished_spans()]


@needs_native
@pytest.mark.parametrize(("mode", "traced"), [("on", True), ("off", False), ("auto", True)])
async def test_requests_are_traced_as_the_setting_says(
        tmp_path: Path, no_otel_env: None, spans: InMemorySpanExporter, mode: str,
        traced: bool) -> None:
    app = create_app(service_settings(tmp_path, f"sqlite:///{tmp_path / 'o.db'}", otel=mode))
    names = await _route_spans(app, spans)
    assert any("/v1/route" in n for n in names) is traced, names


@needs_native
async def test_auto_is_off_when_nothing_is_configured(
        no_otel_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not otel_configured()
    assert fastapi_telemetry("auto") == fastapi_telemetry("off") != {}
    assert fastapi_telemetry("on") == {}  # FastAPI's own default: decided per request
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    assert otel_configured() and fastapi_telemetry("auto") == {}
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert otel_configured() and fastapi_telemetry("auto") == {}


def test_a_bad_otel_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="otel"):
        service_settings(tmp_path, f"sqlite:///{tmp_path / 'o.db'}", otel="sometimes")
