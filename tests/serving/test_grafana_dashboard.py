"""deploy/grafana/routebandit.json asks only for metrics and labels the app exports.

The app serves real traffic (routes, feedback, gateway calls that succeed and fail, the
stats roll-ups) and its ``/metrics`` is parsed; every PromQL query of the dashboard must
name metrics found there, with labels their samples carry. A labelled counter has no
sample until its first increment (dead letters, worker restarts: failures the test does
not cause); its label names are those the app declares for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.gateway_stack import serve_app, started_fakes, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "routebandit.json"
#: Labels Prometheus adds to every series it scrapes (not the app's).
TARGET_LABELS = {"instance", "job"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


def queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    found += [v["query"]["query"] for v in doc["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric, labels)`` for every metric a PromQL expression names, with the labels
    of its matchers and of the ``by (...)`` clauses around it."""
    grouped = {lab.strip() for group in re.findall(r"by \(([^)]*)\)", expr)
               for lab in group.split(",") if lab.strip()}
    out = []
    for name, matchers in re.findall(r"\b(routebandit_[a-z_]+)(\{[^}]*\})?", expr):
        labels = set(re.findall(r"([a-z_]+)\s*=~?", matchers or ""))
        out.append((name, labels | grouped))
    return out


def exported(text: str, declared: dict[str, set[str]]) -> dict[str, set[str]]:
    """Sample name -> label names, from an exposition (and declarations for families
    without samples)."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
        if not family.samples:
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            for suffix in suffixes.get(family.type, ("",)):
                out[family.name + suffix] = declared.get(family.name, set()) | (
                    {"le"} if suffix == "_bucket" else set())
    return out


def test_every_query_names_metrics_and_labels_the_app_exports(
        fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = serve_app(fakes, tmp_path, monkeypatch, with_key=False, stats_refresh_s=1)
    server, _ = next(served)
    fakes["big"].behavior.fail_status = 503  # failures: the error statuses, failovers
    http = httpx.Client(base_url=server.url, timeout=10)
    try:
        body = {"model": "big", "messages": [{"role": "user", "content": "hello"}]}
        assert http.post("/v1/chat/completions", json=body).status_code >= 500
        ids = []
        for _ in range(6):
            body["model"] = "auto"
            r = http.post("/v1/chat/completions", json=body)
            ids.append(r.headers.get("x-routebandit-decision-id"))
        routed = http.post("/v1/route", json={"prompt": "Write a haiku"}).json()
        for _ in range(2):  # accepted, then duplicate
            http.post("/v1/feedback", json={"decision_id": routed["decision_id"],
                                            "score": 0.5})
        service = server.app.state.service
        wait_until(lambda: service.policy.n_learned > 0, timeout=10)
        wait_until(lambda: "routebandit_stats_refresh_seconds_count 0.0" not in
                   http.get("/metrics").text, timeout=10)
        text = http.get("/metrics").text
        declared = {c._name: set(c._labelnames)
                    for c in vars(service.metrics).values() if hasattr(c, "_labelnames")}
    finally:
        http.close()
        next(served, None)  # stops the server
    have = exported(text, declared)
    assert "routebandit_upstream_calls_total" in have  # the gateway's calls were counted
    assert {"model", "status"} <= have["routebandit_upstream_calls_total"]
    missing = []
    for expr in queries():
        names = selectors(expr)
        assert names, f"names no routebandit metric: {expr}"
        for name, labels in names:
            if name not in have:
                missing.append(f"{name} (in {expr})")
                continue
            extra = labels - have[name] - TARGET_LABELS
            if extra:
                missing.append(f"{name} has no label {sorted(extra)} (in {expr})")
    assert missing == []


def test_the_parser_sees_what_it_should() -> None:
    got = selectors('sum by (model) (rate(routebandit_upstream_calls_total'
                    '{instance=~"$i", status=~"error"}[5m]))')
    assert got == [("routebandit_upstream_calls_total", {"instance", "status", "model"})]
    assert len(queries()) >= 25
