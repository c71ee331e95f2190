"""`routebandit keys` and the start-up errors of `routebandit serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback.store import Store
from serving.auth import hash_key
from serving.cli import main


def test_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--admin", "--label", "ci",
                 "--data-dir", str(tmp_path)]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    assert key.startswith("rb_")
    store = Store(f"sqlite:///{tmp_path / 'routebandit.db'}")
    record = store.find_api_key(hash_key(key))
    store.close()
    assert record is not None and (record.tenant, record.admin, record.label) == (
        "acme", True, "ci")
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert key[:10] in listing and "acme" in listing and key not in listing
    assert main(["keys", "revoke", key[:10], "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "revoke", key[:10], "--data-dir", str(tmp_path)]) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "0"], "setting 'port' (--port / ROUTEBANDIT_PORT)"),
    (["--catalog", "/no/such/catalog.yaml"], "setting 'catalog'"),
    (["--policy", "/no/such/policy.bin"], "setting 'policy'"),
    (["--host", "0.0.0.0"], "setting 'host' (0.0.0.0): no API keys exist"),
], ids=["port", "catalog", "policy", "public-host-without-keys"])
def test_serve_refuses_bad_settings_with_a_named_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path), *argv]) == 2
    assert f"routebandit serve: error: {message}" in capsys.readouterr().err
