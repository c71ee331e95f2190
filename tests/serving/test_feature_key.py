"""serving/feature_key.py: no word of a prompt is stored unless store_prompts says so.

The service hashes every word with the deployment's feature key before it becomes a
feature; these tests plant distinctive words in prompts, send them through
``/v1/route`` and ``/v1/chat/completions``, and look for them everywhere the service
writes: every column of every table (checkpoints included), the database file itself
and the audit view.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select

from bandit import KEYED_FEATURE_VERSION, Catalog, Policy, key_fingerprint
from bandit.features import HASH_PREFIX
from feedback.store import Store
from feedback.training import relearn
from serving.app import preflight
from serving.feature_key import FINGERPRINT, KEY_FILE, load_feature_key
from serving.settings import SettingsError
from tests.fakes.fake_upstream import FakeUpstream
from tests.serving.conftest import Api, running, service_settings
from tests.serving.gateway_stack import started_fakes, write_catalog_file

# Words that no feature name, setting, model name or schema holds ("unique" is in the
# schema, "token" in feature names: planted, but not looked for).
WORDS = ("alpha", "secret", "zebra", "marmalade", "quokkapassword", "xylophonist")
SYSTEM = "You are the alpha keeper of the quokkapassword vault."
OPENING = "alpha secret prompt zebra-unique-token: what is 2 + 2? Marmalade answer for"
KEY_ENV = "FAKE_UPSTREAM_API_KEY"  # a name the egress policy admits


def _messages(i: int, *, long: bool = False) -> list[dict[str, str]]:
    # One template (the opening), a different end each time; the long one is over every
    # word cap, so both its ends are kept.
    user = f"{OPENING} xylophonist number {i}."
    if long:
        user += " filler" * 1500 + " the zebra ends here"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _leaks(text: str | bytes) -> list[str]:
    low = text.lower() if isinstance(text, str) else text.lower().decode("latin-1")
    return [w for w in WORDS if w in low]


def _dump(url: str) -> Iterator[tuple[str, str, Any]]:
    """Every value of every column of every table, as (table, column, value)."""
    engine = create_engine(url)
    meta = MetaData()
    try:
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    for column, value in row._mapping.items():
                        yield table.name, column, value
    finally:
        engine.dispose()


def _stored_leaks(url: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for table, column, value in _dump(url):
        if value is None or isinstance(value, (int, float)):
            continue
        if not isinstance(value, (str, bytes)):
            value = json.dumps(value, default=str)  # PostgreSQL's JSON columns, datetimes
        if leaks := _leaks(value):
            found.setdefault(f"{table}.{column}", []).extend(leaks)
    return found


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    yield from started_fakes()


def _settings(tmp_path: Path, db_url: str, fakes: dict[str, FakeUpstream],
              monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Any:
    write_catalog_file(tmp_path / "catalog.yaml", fakes)
    monkeypatch.setenv(KEY_ENV, "sk-fake")
    return service_settings(tmp_path, db_url, catalog=str(tmp_path / "catalog.yaml"),
                            policy_versions=False, **overrides)


async def _planted_traffic(api: Api, *, feedback: bool = True) -> list[str]:
    """Planted prompts through /v1/route (with feedback) and /v1/chat/completions."""
    ids = []
    for i in range(5):
        ids.append((await api.route(messages=_messages(i, long=i == 4)))["decision_id"])
    r = await api.client.post("/v1/chat/completions",
                              json={"model": "auto", "messages": _messages(9)})
    assert r.status_code == 200, r.text
    chat_id = r.headers["x-routebandit-decision-id"]
    if feedback:
        for decision_id in ids:
            r = await api.client.post("/v1/feedback",
                                      json={"decision_id": decision_id, "score": 0.75})
            assert r.status_code == 200, r.text
        for _ in range(500):  # until the learner has learned them all
            if (await api.client.get("/v1/policy")).json()["n_learned"] >= len(ids):
                break
            await asyncio.sleep(0.01)
        r = await api.client.post("/v1/policy/checkpoint")
        assert r.status_code == 200 and r.json()["n_learned"] >= len(ids)
    return [*ids, chat_id]


async def test_no_word_of_a_prompt_is_stored_without_store_prompts(
    tmp_path: Path, db_url: str, fakes: dict[str, FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(tmp_path, db_url, fakes, monkeypatch)
    async with running(settings) as api:
        ids = await _planted_traffic(api)
        for decision_id in ids:
            r = await api.client.get(f"/v1/decisions/{decision_id}")
            assert r.status_code == 200 and _leaks(r.text) == [], r.text
            audit = r.json()
            assert audit["prompt_text"] is None
            assert audit["feature_version"] == KEYED_FEATURE_VERSION
        for _ in range(500):  # the chat call's outcome is recorded in the background
            if (await api.client.get(f"/v1/decisions/{ids[-1]}")).json()["outcome"]:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the chat call's outcome was never recorded")
    assert _stored_leaks(db_url) == {}
    if db_url.startswith("sqlite"):  # and not in any page of the file, freed ones too
        for path in tmp_path.glob("routebandit.db*"):
            assert _leaks(path.read_bytes()) == [], path
    # The checkpoint's kinds are templates by their hash, and there is one (the planted
    # prompts share their opening words and system prompt).
    store = Store(db_url)
    try:
        checkpoint = store.latest_checkpoint()
        assert checkpoint is not None and checkpoint.blob is not None
        kinds = [k for k, _ in Policy.read_metadata(checkpoint.blob)["kinds"]["kinds"]]
        assert len(kinds) == 1
        assert re.fullmatch(r"head=~[0-9a-f]{16}\|shead=~[0-9a-f]{16}", kinds[0])
        # Training from the log (what `routebandit train` does) learns from the hashes.
        logged = list(store.logged(kind="policy"))
        assert len(logged) == 5
        assert all(x.decision.context.feature_version == KEYED_FEATURE_VERSION
                   for x in logged)
        fresh = Policy(Catalog.load(settings.catalog))
        assert relearn(fresh, logged) == 5
        assert [k for k, _ in fresh.kinds.to_dict()["kinds"]] == kinds
        assert _leaks(fresh.to_bytes()) == []
    finally:
        store.close()


async def test_with_store_prompts_only_the_prompt_column_holds_the_words(
    tmp_path: Path, db_url: str, fakes: dict[str, FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(tmp_path, db_url, fakes, monkeypatch, store_prompts=True)
    async with running(settings) as api:
        ids = await _planted_traffic(api, feedback=False)
        audit = (await api.client.get(f"/v1/decisions/{ids[0]}")).json()
        assert audit["prompt_text"] == f"system: {SYSTEM}\n\nuser: {_messages(0)[1]['content']}"
        # The features are hashed all the same: one feature space whatever the setting.
        assert audit["feature_version"] == KEYED_FEATURE_VERSION
    leaks = _stored_leaks(db_url)
    assert set(leaks) == {"decisions.prompt_text"}


# -- the key: where it comes from, and that every process shares it --------------------


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path / "data", db_url)
    key = load_feature_key(settings)
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", key) and path.read_text() == key.decode() + "\n"
    assert load_feature_key(settings) == key  # a restart reads it back
    # Its content, given as the setting (another process of the cluster), is the same key.
    other = service_settings(tmp_path / "elsewhere", db_url, feature_key=path.read_text())
    assert load_feature_key(other) == key
    assert not (tmp_path / "elsewhere" / KEY_FILE).exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [KEY_FILE]  # no leftovers


def test_processes_starting_together_share_one_key_file(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path / "data", db_url)
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_feature_key(settings), range(16)))
    assert len(keys) == 1 and os.listdir(tmp_path / "data") == [KEY_FILE]


async def test_the_key_survives_a_restart(tmp_path: Path, db_url: str) -> None:
    settings = service_settings(tmp_path, db_url)
    contexts = []
    for _ in range(2):
        async with running(settings) as api:
            out = await api.route(messages=_messages(1))
            audit = (await api.client.get(f"/v1/decisions/{out['decision_id']}")).json()
            contexts.append(audit["context"]["namespaces"])
    assert contexts[0] == contexts[1] and contexts[0]["u"][0].startswith(HASH_PREFIX)


def test_a_second_key_on_one_database_fails_start_up(tmp_path: Path, db_url: str) -> None:
    first = service_settings(tmp_path / "a", db_url)
    pre = preflight(first)  # the first start stores the fingerprint
    key = pre.feature_key
    assert pre.store.meta(FINGERPRINT) == key_fingerprint(key)
    pre.store.close()
    assert _stored_leaks(db_url) == {}
    assert all(key.decode() not in str(v) for _, _, v in _dump(db_url))  # never the key
    preflight(service_settings(tmp_path / "b", db_url, feature_key=key.decode())).store.close()
    other = service_settings(tmp_path / "c", db_url, feature_key="another key, 16 chars+")
    with pytest.raises(SettingsError, match="set ROUTEBANDIT_FEATURE_KEY to the same value "
                                            "on every process") as err:
        preflight(other)
    assert "another key" not in str(err.value) and key.decode() not in str(err.value)


def test_a_short_feature_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="setting 'feature_key'") as err:
        service_settings(tmp_path, "sqlite://", feature_key="hunter2")
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(err.value.__cause__)
