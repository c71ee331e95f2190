"""The dashboard in a real browser: headless Chromium driven by Playwright, against the
app served on 127.0.0.1 over a seeded decision log and an MLflow store with two versions.

Skipped, saying why, where Playwright's Python package or a Chromium binary is missing
(Playwright cannot download its own browser here: ``apt-get install chromium``).
Set ``ROUTEBANDIT_SCREENSHOTS=<dir>`` to also save the screenshots the docs show.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback.store import Store
from serving.app import create_app
from serving.auth import create_key
from tests import stats_seed
from tests.fakes.server import ServerThread
from tests.mlflow_store import fresh_tracking_uri
from tests.serving.conftest import service_settings

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright's Python package (pip install playwright)")
CHROMIUM = os.environ.get("ROUTEBANDIT_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"needs a Chromium binary (apt-get install chromium; looked for {CHROMIUM})",
                allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PANELS = ("traffic", "kinds", "feedback", "spend", "latency", "errors", "exploration",
          "versions", "learner")
SHOTS = os.environ.get("ROUTEBANDIT_SCREENSHOTS")


@dataclass
class Served:
    url: str
    admin: str
    acme: str


@dataclass
class Watched:
    """What a page did: console errors, uncaught exceptions, requests it made."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


def _versions(uri: str) -> None:
    from bandit import Policy, PolicyConfig
    from feedback import synthetic
    from feedback.tracking import Tracker
    from feedback.training import relearn

    logs = synthetic.traffic(300, seed=1)
    tracker = Tracker(uri)
    tracker.log_policy_version(Policy(synthetic.catalog(), seed=1), examples=logs,
                               kind="snapshot")
    trained = Policy(synthetic.catalog(), config=PolicyConfig(exploration="epsilon"), seed=2)
    relearn(trained, synthetic.traffic(600, seed=2))
    tracker.log_policy_version(trained, examples=logs, kind="train", alias="challenger")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp / 'rb.db'}"
    store = Store(url)
    stats_seed.busy(store, now=datetime.now(timezone.utc), days=3, n=3000)
    admin, _ = create_key(store, tenant="ops", admin=True)
    acme, _ = create_key(store, tenant="acme")
    store.close()
    uri = fresh_tracking_uri(tmp / "mlflow")
    _versions(uri)
    mp = pytest.MonkeyPatch()
    mp.setenv("ROUTEBANDIT_GATEWAY__UPSTREAM_ALLOW", '["127.0.0.1"]')
    settings = service_settings(
        tmp, url, catalog=str(stats_seed.write_catalog(tmp / "catalog.yaml")),
        tracking_uri=uri, snapshot_every=10**9, snapshot_interval_s=10**6,
        versions_poll_s=3600)
    server = ServerThread(create_app(settings))
    server.start(timeout=60)
    try:
        yield Served(server.url, admin, acme)
    finally:
        server.stop(timeout=60)
        mp.undo()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_page(browser: Any, served: Served, watched: Watched, *, width: int = 1400) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 1000})

    def route(r: Any) -> None:  # offline: nothing but this service
        if r.request.url.startswith(served.url):
            r.continue_()
        else:
            watched.outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.on("request", lambda r: watched.requests.append(r.url))
    return page


def sign_in(page: Any, served: Served, key: str) -> None:
    page.goto(f"{served.url}/dashboard")
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    settle(page)


def settle(page: Any) -> None:
    """Wait until every panel has finished loading."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.panel')].every("
        "p => p.dataset.state !== 'loading')", timeout=20000)


def states(page: Any) -> dict[str, str]:
    return {p: page.get_attribute(f"#panel-{p}", "data-state") for p in PANELS}


def test_an_admin_sees_every_panel_with_data(browser: Any, served: Served) -> None:
    watched = Watched()
    page = open_page(browser, served, watched)
    sign_in(page, served, served.admin)
    assert states(page) == {p: "ready" for p in PANELS}
    assert "every tenant" in page.inner_text("#who")
    assert page.is_visible("#tenant-label")
    for name in ("traffic", "feedback", "spend", "latency", "errors", "exploration",
                 "versions"):
        assert page.locator(f"#panel-{name} canvas").count() >= 1, name
    for name in ("kinds", "feedback", "spend", "latency", "errors", "versions"):
        assert page.locator(f"#panel-{name} .table tbody tr").count() >= 1, name
    assert page.locator("#panel-versions .chart.second canvas").count() == 1  # MLflow's
    assert "challenger" in page.inner_text("#panel-versions .table")
    assert "saved than big" in page.inner_text("#panel-spend .saving")
    assert "reference model's list prices" in page.inner_text("#panel-spend .method")
    assert page.locator("#summary .card").count() == 7
    assert watched.errors == [] and watched.outside == []
    stats = [u for u in watched.requests if "/v1/stats/" in u]
    assert all("tenant=" not in u for u in stats)
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "dashboard.png"), full_page=True)
    page.context.close()


def test_filtering_by_tenant_and_range(browser: Any, served: Served) -> None:
    watched = Watched()
    page = open_page(browser, served, watched)
    sign_in(page, served, served.admin)
    everyone = page.inner_text("#panel-traffic .foot")
    watched.requests.clear()
    page.select_option("#tenant", "acme")
    settle(page)
    stats = [u for u in watched.requests if "/v1/stats/" in u]
    assert len(stats) == len(PANELS) and all("tenant=acme" in u for u in stats), stats
    acme = page.inner_text("#panel-traffic .foot")
    assert acme != everyone and int(acme.split()[0].replace(",", "")) < int(
        everyone.split()[0].replace(",", ""))
    assert "tenant=acme" in page.url
    watched.requests.clear()
    page.select_option("#range", "7d")
    settle(page)
    assert states(page) == {p: "ready" for p in PANELS}
    stats = [u for u in watched.requests if "/v1/stats/" in u]
    assert stats and all("since=7d" in u for u in stats), stats
    page.select_option("#range", "6h")
    settle(page)
    watched.requests.clear()
    page.select_option("#bucket", "5m")
    settle(page)
    stats = [u for u in watched.requests if "/v1/stats/" in u]
    assert stats and all("bucket=5m" in u and "since=6h" in u for u in stats), stats
    assert states(page)["traffic"] == "ready"
    page.select_option("#range", "7d")  # 5-minute buckets over 7 days: refused, by name
    settle(page)
    assert states(page)["traffic"] == "error"
    assert page.inner_text("#status").startswith("bucket: ")
    assert watched.errors == [] or all("422" in e for e in watched.errors)
    page.context.close()


def test_a_tenant_key_cannot_see_the_admin_view(browser: Any, served: Served) -> None:
    watched = Watched()
    page = open_page(browser, served, watched)
    sign_in(page, served, served.acme)
    assert states(page) == {p: "ready" for p in PANELS}
    assert page.inner_text("#who") == "tenant acme"
    assert not page.is_visible("#tenant-label")
    assert "tenant=" not in " ".join(u for u in watched.requests if "/v1/stats/" in u)
    assert watched.errors == [] and watched.outside == []
    # Asking for another tenant (or editing the page) gets nothing.
    status = page.evaluate("""async () => {
        const r = await fetch('v1/stats/traffic?tenant=globex', {headers: {
            Authorization: 'Bearer ' + sessionStorage.getItem('routebandit.key')}});
        return r.status; }""")
    assert status == 403
    assert "DR estimate" in page.inner_text("#panel-versions .table")
    assert "admin keys see them" in page.inner_text("#panel-versions")
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "dashboard-tenant.png"), full_page=False)
    # The key lives in this tab only: a new tab (context) must sign in again.
    page.context.close()
    other = open_page(browser, served, Watched())
    other.goto(f"{served.url}/dashboard")
    other.wait_for_selector("#signin:not([hidden])")
    assert other.is_hidden("#panels")
    other.context.close()


def test_the_api_reference_pages_load_offline(browser: Any, served: Served) -> None:
    watched = Watched()
    page = open_page(browser, served, watched)
    page.goto(f"{served.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20000)
    assert "routebandit" in page.inner_text(".swagger-ui .info .title")
    page.goto(f"{served.url}/redoc")
    page.wait_for_selector("redoc h1, [role=main] h1", timeout=20000)
    # ReDoc's bundle always asks for its makers' logo (an <img> it hides when the
    # request fails); everything else comes from the package.
    assert [u for u in watched.outside if "cdn.redoc.ly/redoc/logo" not in u] == []
    assert watched.errors in ([], ["Failed to load resource: net::ERR_FAILED"])
    page.context.close()


def test_the_page_is_served_with_a_strict_policy(served: Served) -> None:
    r = httpx.get(f"{served.url}/dashboard")
    assert r.status_code == 200 and "<script>" not in r.text  # scripts are files of their own
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert httpx.get(f"{served.url}/dashboard/static/vendor/uplot/LICENSE").status_code == 200
