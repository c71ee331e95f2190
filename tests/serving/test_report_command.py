"""``routebandit report``: the seeded figures in the terminal and in one HTML file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedback.store import Store
from serving.cli import main
from tests import stats_seed


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    store = Store(url)
    stats_seed.small(store)
    store.close()
    return url


def test_the_report_summarises_and_writes_one_self_contained_file(
        seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "march.html"
    code = main(["report", "--database-url", seeded, "--data-dir", str(tmp_path),
                 "--since", "2026-03-08T00:00Z", "--until", "2026-03-10T12:30Z",
                 "--bucket", "1d", "--catalog", str(stats_seed.write_catalog(tmp_path / "c.yaml")),
                 "--out", str(out), "--no-versions"])
    text = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert text.startswith("routebandit report: 2026-03-08 00:00 UTC to 2026-03-10 12:30 UTC "
                           "(1d buckets), every tenant")
    assert "6 (policy 83%, failover 17%); 1 shadow" in lines["decisions"]
    assert "cheap 67%, big 33%" in lines["traffic"]
    assert "83.3% scored" in lines["feedback"]
    # $0.095 at big's prices for what cost $0.00502 (tests/feedback/stats/test_queries.py)
    assert "$0.005020; saved $0.0900 (94.7%) against big" in lines["spend"]
    assert "40.0% of 5 calls failed; failovers 1" in lines["errors"]
    assert "served v1, v2" in lines["versions"]
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") >= 7
    # self-contained: nothing fetched from anywhere (no script, no external source)
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page)
    assert "same tokens" not in page and "reference model&#x27;s list prices" in page


def test_an_unknown_reference_is_named(seeded: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--database-url", seeded, "--data-dir", str(tmp_path),
                 "--reference", "nope", "--no-versions", "--out", str(tmp_path / "r.html")])
    assert code == 2
    assert "reference: no model 'nope'" in capsys.readouterr().err
