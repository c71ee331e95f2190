"""``routebandit replay --embedder``: routed by meaning as the service routes, and told."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serving.cli as cli
from bandit.outcomes import OutcomeTable
from bandit.replay import Change
from serving.commands.replay import _change, embed_table
from serving.embedder import LocalEmbedder, bounded

MODELS = ("chef", "lawyer", "coder")
TOPICS = {  # each topic's words; model MODELS[k] answers topic k well
    "cooking": "recipe oven bake flour sugar garlic onion simmer sauce roast butter dough "
               "pasta spice marinade skillet broth whisk dessert knead",
    "law": "contract tenant lawsuit court judge liability clause statute attorney appeal "
           "damages plaintiff lease verdict copyright negligence testimony jury custody",
    "code": "python function loop array compile bug recursion class variable parser regex "
            "database query thread exception pointer library runtime iterator hash",
}
OPENERS = ("Can you explain", "Quick question about", "I keep wondering about",
           "Please help me understand", "What should I know about", "Tell me about",
           "Why does", "How do people handle", "Is it true that", "Give me advice on")


def planted_rows(n: int = 450, seed: int = 0) -> list[dict[str, str]]:
    """Free-form questions on three hidden topics (no template: varied openers, the
    topic's words in random order); the task column names the topic."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        k = i % len(names)
        words = rng.choice(TOPICS[names[k]].split(), size=int(rng.integers(4, 8)),
                           replace=False)
        row = {"id": f"q{i}", "task": names[k],
               "split": "test" if i % 10 < 3 else "train",
               "prompt": f"{rng.choice(OPENERS)} {' '.join(words)}?"}
        for j, m in enumerate(MODELS):
            good = rng.random() < (0.9 if j == k else 0.15)
            row[f"{m}|quality"] = "1" if good else "0"
            row[f"{m}|cost_usd"] = "0.001"
            row[f"{m}|output_chars"] = "200"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "topics.csv"
    rows = planted_rows()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def only_replay_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("serving.commands.replay",))


def run_replay(path: Path, out: Path, *extra: str) -> dict[str, Any]:
    code = cli.main(["replay", str(path), "--cost-weights", "0,1", "--quiet",
                     "--json", str(out), *extra])
    assert code == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def test_meaning_is_found_reported_and_routed_on(
    table_path: Path, tmp_path: Path, only_replay_command: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    doc = run_replay(table_path, tmp_path / "local.json", "--tracking-uri", uri)
    text = capsys.readouterr().out
    found = doc["clusters"]
    assert doc["config"]["embedder"] == "local"
    assert found["n_clusters"] >= 3 and found["depth"] >= 1
    assert found["purity"] >= 0.95 and found["purity_top"] > 0.5 and found["nmi"] > 0.5
    assert sum(found["leaf_sizes"]) == 450
    assert found["n_learned"] == doc["data"]["n_train"]
    assert found["checkpoint_bytes"] > 0
    assert f"clusters of meaning (embedder local): {found['n_clusters']} clusters" in text
    assert f"purity {found['purity']:.3f} by leaf" in text
    assert f"NMI {found['nmi']:.3f}" in text

    import mlflow  # noqa: PLC0415

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["replay.embedder"] == "local"
    assert run.data.params["clusters.n_clusters"] == str(found["n_clusters"])
    assert run.data.metrics["clusters.purity"] == pytest.approx(found["purity"])
    assert run.data.metrics["clusters.nmi"] == pytest.approx(found["nmi"])

    blind = run_replay(table_path, tmp_path / "none.json", "--embedder", "none",
                       "--no-mlflow")
    assert blind["clusters"] is None and blind["config"]["embedder"] == "none"
    assert "clusters of meaning: off (--embedder none)" in capsys.readouterr().out
    # Each topic has its own best model and no template: meaning routes, words alone
    # (each prompt a kind of its own) learn far slower.
    assert max(p["quality"] for p in doc["frontier"]) > max(
        p["quality"] for p in blind["frontier"]) + 0.15


def test_the_table_is_embedded_as_the_service_embeds() -> None:
    long = "Tell me about " + "pasta sauce " * 400 + " and then the court verdict."
    prompts = ["Why does the oven bake unevenly?", long, "   "]
    table = OutcomeTable.from_rows(
        ["a", "b", "c"], ["x"] * 3, ["train", "train", "test"], prompts, ["m"],
        quality=[[1]] * 3, cost_usd=[[0.001]] * 3, output_chars=[[1]] * 3)
    e = embed_table(table)
    local = LocalEmbedder()
    assert e.shape == (3, 256)
    for i in (0, 1):
        expected = local.embed_now(prompts[i]).vector
        assert expected is not None
        np.testing.assert_array_equal(e[i], expected)
    # Only the head and tail of a long turn, as serving/embedder.py bounds it.
    bounded_only = local.embed_now(bounded(long)).vector
    assert bounded_only is not None
    np.testing.assert_array_equal(e[1], bounded_only)
    assert not np.allclose(e[1], local._mean_of_tokens(long))  # the whole turn differs
    assert not e[2].any()  # nothing to embed: no clusters, as in the service


@pytest.mark.parametrize(("text", "expected"), [
    ("degrade:gpt-4@100", Change("degrade", "gpt-4", 100)),
    ("add:meta/llama-2@0", Change("add", "meta/llama-2", 0)),
    ("price:a:b@7=0.5,1.5", Change("price", "a:b", 7, input_price=0.5, output_price=1.5)),
], ids=["degrade", "add", "price"])
def test_a_change_is_parsed(text: str, expected: Change) -> None:
    assert _change(text) == expected


@pytest.mark.parametrize("text", ["degrade:gpt-4", "gpt-4@10", "add:@3", "degrade:m@x",
                                  "price:m@3", "price:m@3=1", "price:m@3=a,b", "boom:m@3",
                                  "price:m@3=-1,2"])
def test_a_bad_change_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _change(text)


def test_a_change_is_replayed_and_reported(
    table_path: Path, tmp_path: Path, only_replay_command: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = run_replay(table_path, tmp_path / "change.json", "--embedder", "none",
                     "--no-mlflow", "--change", "degrade:chef@100", "--change-window", "50")
    text = capsys.readouterr().out
    (change,) = doc["changes"]
    assert change["change"] == "degrade:chef@100" and change["window"] == 50
    assert doc["config"]["changes"] == ["degrade:chef@100"]
    assert [r["cost_weight"] for r in change["by_cost_weight"]] == [0.0, 1.0]
    assert "change degrade:chef@100: chef answers all wrong from train step 100 on" in text
    assert "falls below 10%" in text
    assert cli.main(["replay", str(table_path), "--quiet", "--no-mlflow", "--embedder", "none",
                     "--change", "degrade:nobody@1"]) == 2
    assert "no model 'nobody'" in capsys.readouterr().err
