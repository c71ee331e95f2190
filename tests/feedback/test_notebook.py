"""``notebooks/compare_policies.ipynb`` runs top to bottom against a store the test fills."""

from __future__ import annotations

from pathlib import Path

import pytest

from bandit import Policy, PolicyConfig
from feedback import synthetic
from feedback.training import relearn
from tests.mlflow_store import fresh_tracking_uri

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare_policies.ipynb"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from feedback.tracking import Tracker

    uri = fresh_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    tracker = Tracker(uri)
    held_out = synthetic.traffic(600, seed=2)
    naive = Policy(synthetic.catalog(), seed=3)
    tracker.log_policy_version(naive, examples=held_out, kind="snapshot", alias="champion")
    trained = Policy(synthetic.catalog(), config=PolicyConfig(exploration="epsilon"), seed=3)
    relearn(trained, synthetic.traffic(1500, seed=1))
    tracker.log_policy_version(trained, examples=held_out, kind="replay", alias="challenger",
                               frontier=[(0.0001, 0.45), (0.0008, 0.7), (0.004, 0.83)])
    tracker.evaluate("challenger", held_out)
    tracker.log_replay({
        "config": {"seed": 0, "cost_weights": [0.0, 0.1], "exploration": "squarecb"},
        "frontier": [{"cost_weight": 0.0, "quality": 0.8, "cost_per_prompt": 0.004},
                     {"cost_weight": 0.1, "quality": 0.6, "cost_per_prompt": 0.0005}],
        "aiq": 0.71, "cost_pct_for_95": 35.0, "baselines": {"random": {"aiq": 0.5}},
    }, run_name="replay squarecb")
    return uri


def test_the_notebook_executes_against_a_fresh_store(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment; the notebook reads MLFLOW_TRACKING_URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" launches "python": jupyter_client swaps in sys.executable (this venv)
    client = NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", "")))
    joined = "\n".join(texts)
    assert tracking_uri in joined
    assert "v1" in joined and "v2" in joined and "challenger" in joined
    assert "coder" in joined  # a traffic-share column
    assert "replay squarecb" in joined and "metrics.random.aiq" in joined
    assert not list(tmp_path.glob("mlruns")), "the notebook must not write to the CWD"
