"""Policy versions in MLflow: runs, the Model Registry, aliases and a pyfunc face.

This is the only module that imports mlflow, and it does so inside functions, so
importing :mod:`feedback` stays cheap.

* Every policy version is an MLflow run (params: VW arguments, exploration, reward
  weights, feature version, catalog hash, examples learned, parent; metrics: IPS, SNIPS
  and DR estimates on a held-out window with 95% intervals, the logging policy's observed
  mean, estimated quality, cost, latency and traffic share; artifacts: the policy bytes,
  the catalog, the feature configuration, a cost-quality plot) and a registered model
  version that loads as an MLflow pyfunc model.
* Aliases ``champion`` and ``challenger`` name the serving and the candidate version;
  :meth:`Tracker.promote` keeps a history so :meth:`Tracker.rollback` can restore the
  previous champion.
* The tracking URI is, in order: the one given, ``MLFLOW_TRACKING_URI``, or a SQLite
  store ``<data_dir>/mlflow.db`` with artifacts in ``<data_dir>/mlartifacts`` (SQLite is
  MLflow's own default since 3.7 and supports the Model Registry; the file store does not
  get new features).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bandit.errors import RouteBanditError
from bandit.features import FEATURE_VERSION, featurize, parse_request
from bandit.ope import Estimate, Report, summary
from bandit.policy import Policy
from bandit.reward import RewardWeights
from feedback.evaluation import (
    Example,
    Point,
    model_points,
    observed_point,
    report_point,
    score,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

EXPERIMENT = "routebandit"
MODEL_NAME = "routebandit-policy"
CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)
POLICY_FILE = "policy.rbp"
KIND_TAG = "routebandit.kind"
VERSION_TAG = "routebandit.version"
HISTORY_TAG = "routebandit.champion_history"
ALIASES_TAG = "routebandit.aliases"  # on a version's run: its aliases now, comma-separated
HISTORY_MAX = 100
_URI_LOCK = threading.RLock()
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class TrackingError(RouteBanditError):
    """MLflow could not store or find a policy version (wraps ``MlflowException``).

    ``code`` is MLflow's error code, e.g. ``RESOURCE_DOES_NOT_EXIST``.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# What MLflow answers for a missing registered model, version or alias.
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def resolve_tracking_uri(
    explicit: str | None = None,
    *,
    data_dir: str | Path = "data",
    environ: Mapping[str, str] | None = None,
) -> str:
    """The tracking URI: ``explicit``, else ``MLFLOW_TRACKING_URI``, else a local SQLite store.

    >>> resolve_tracking_uri("http://mlflow:5000")
    'http://mlflow:5000'
    >>> resolve_tracking_uri(data_dir="/srv/rb", environ={})
    'sqlite:////srv/rb/mlflow.db'
    """
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(data_dir).absolute() / 'mlflow.db'}"


def _local_artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live next to the database, not in the CWD."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").absolute().as_uri()
    return None


def metric_key(name: str) -> str:
    """A metric name MLflow accepts (model names may hold ``@`` or ``+``).

    >>> metric_key("share.openai/gpt-4o@2024")
    'share.openai/gpt-4o_2024'
    """
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def run_title(version: int, kind: str, aliases: Sequence[str] = ()) -> str:
    """What a policy version's run is called in MLflow's UI: what it is, not a random name.

    >>> run_title(2, "train", ["challenger"])
    'policy v2 (train, challenger)'
    """
    return f"policy v{version} ({', '.join([kind or 'policy', *sorted(aliases)])})"


def version_number(ref: str | int) -> int | None:
    """``3``, ``"3"`` and ``"v3"`` are version 3; an alias gives ``None``."""
    if isinstance(ref, int):
        return ref
    m = re.fullmatch(r"v?(\d+)", ref.strip())
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class VersionInfo:
    """One registered policy version and the run that logged it."""

    version: int
    run_id: str
    aliases: tuple[str, ...] = ()
    created_ms: int = 0
    kind: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"v{self.version}"

    @property
    def n_learned(self) -> int:
        return int(float(self.params.get("n_learned", "0")))

    @property
    def parent(self) -> str | None:
        p = self.params.get("parent_version")
        return None if p in (None, "", "None") else p


@dataclass(frozen=True)
class Evaluation:
    """A candidate scored on logged traffic next to the champion."""

    candidate: VersionInfo
    champion: VersionInfo | None
    reports: Mapping[str, Report]
    run_id: str | None = None

    def table(self) -> list[tuple[str, str, float, float, float]]:
        """Rows ``(policy, estimator, value, low, high)``."""
        rows = []
        for label, rep in self.reports.items():
            for est in ("ips", "snips", "dr"):
                e = getattr(rep, est)
                rows.append((label, est, e.value, e.low, e.high))
        first = next(iter(self.reports.values()), None)
        if first is not None:
            e = first.logged
            rows.append(("logging policy", "observed", e.value, e.low, e.high))
        return rows


# -- the pyfunc face ----------------------------------------------------------------


def choose_models(policy: Policy, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The model ``policy`` serves (greedily) for each row of ``prompt``/``messages``."""
    out = []
    for row in rows:
        messages = row.get("messages")
        if isinstance(messages, str):
            messages = json.loads(messages)
        if messages is None or (isinstance(messages, float) and math.isnan(messages)):
            req = parse_request(prompt=str(row.get("prompt") or ""),
                                metadata=_metadata(row))
        else:
            req = parse_request(messages=list(messages), metadata=_metadata(row))
        out.append(policy.decide(featurize(req), explore=False).model)
    return out


def _metadata(row: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(row[k]) for k in ("tenant", "task")
            if isinstance(row.get(k), str) and row[k]}


_CLASSES: dict[str, type] = {}

# MLflow's "models from code": the logged model is this script, not a pickled object.
_MODEL_CODE = """\
import mlflow

from feedback.tracking import PolicyModel

mlflow.models.set_model(PolicyModel())
"""


def _policy_model_class() -> type:
    if "PolicyModel" not in _CLASSES:
        import mlflow.pyfunc
        import pandas as pd

        class PolicyModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
            """A policy version as a pyfunc: a DataFrame of prompts in, model names out.

            Columns: ``prompt`` or ``messages`` (a list of chat messages or its JSON), and
            optionally ``tenant`` and ``task``. The output is the model the policy would
            serve each row, greedily (no exploration).
            """

            def load_context(self, context: Any) -> None:
                blob = Path(context.artifacts["policy"]).read_bytes()
                self.policy = Policy.from_bytes(blob)

            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                if hasattr(model_input, "to_dict"):
                    rows = model_input.to_dict("records")
                else:
                    rows = list(model_input)
                return choose_models(self.policy, rows)

            # A DataFrame hint tells MLflow to pass the frame through without a schema
            # (set here because postponed annotations cannot see the lazy pandas import).
            predict.__annotations__["model_input"] = pd.DataFrame

        PolicyModel.__qualname__ = "PolicyModel"
        _CLASSES["PolicyModel"] = PolicyModel
    return _CLASSES["PolicyModel"]


def __getattr__(name: str) -> Any:
    # ``from feedback.tracking import PolicyModel`` builds the class (and imports mlflow)
    # only when asked, so importing this module stays cheap.
    if name == "PolicyModel":
        return _policy_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the tracker --------------------------------------------------------------------


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(str(exc.message), code=exc.error_code) from exc


class Tracker:
    """Policy versions in one MLflow tracking store and registered model.

    Calls block (database and artifact I/O): from async code run them in a thread.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str = EXPERIMENT,
        model_name: str = MODEL_NAME,
        artifact_location: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.model_name = model_name
        self.artifact_location = artifact_location or _local_artifact_root(tracking_uri)
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._blobs: dict[int, bytes] = {}

    # -- plumbing -------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the store exists yet (always true for a server or database URI).

        Lets the service follow the champion without creating a local store it would
        never use; the first snapshot or ``routebandit`` command creates it.
        """
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri[len("sqlite:///") :]).is_file()
        return True

    def prepare(self, *, create: bool = False) -> None:
        """Import what logging a version needs and open the store (``create`` it if missing).

        For start-up: otherwise the first snapshot imports MLflow, pandas and matplotlib
        (~2 s of CPU) and creates the store (MLflow's migrations, ~6 s) under load, in a
        thread that competes with requests for the GIL. Without ``create`` a missing local
        store stays missing.
        """
        import matplotlib.backends.backend_agg  # noqa: F401  (log_figure renders with it)
        import matplotlib.figure  # noqa: F401
        import mlflow.models  # noqa: F401
        import mlflow.pyfunc  # noqa: F401  (and pandas)

        _policy_model_class()
        if create or self.exists():
            self.experiment_id()  # opens, or creates, the store and the experiment

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                        registry_uri=self.tracking_uri)
        return self._client

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[Any]:
        """MLflow's fluent API pointed at this store for the duration of the block."""
        import mlflow

        with _URI_LOCK, _translated():
            prev_t, prev_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
            # set_tracking_uri also exports MLFLOW_TRACKING_URI (and the registry's):
            # restored too, or resolve_tracking_uri would later read MLflow's default.
            prev_env = {k: os.environ.get(k) for k in _URI_ENV}
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            try:
                yield mlflow
            finally:
                mlflow.set_tracking_uri(prev_t)
                mlflow.set_registry_uri(prev_r)
                for k, v in prev_env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            with _translated():
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location
                    )
                else:
                    self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- logging --------------------------------------------------------------------
    def log_policy_version(
        self,
        policy: Policy,
        *,
        examples: Sequence[Example] = (),
        kind: str = "snapshot",
        weights: RewardWeights | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        frontier: Sequence[tuple[float, float]] = (),
        alias: str | None = None,
        run_name: str | None = None,
    ) -> VersionInfo:
        """Log ``policy`` as a run and a registered model version; return the version.

        With ``examples`` (a held-out window of logged decisions) the run carries the
        IPS, SNIPS and DR estimates of the policy's mean reward with 95% intervals, the
        logging policy's observed mean, estimated quality, cost, latency and traffic
        share. ``kind`` says where it came from (``snapshot``, ``replay``, ``train``).
        ``alias`` (``challenger`` or ``champion``) is set on the new version.
        """
        blob = policy.to_bytes()
        meta = Policy.read_metadata(blob)
        all_params = _policy_params(meta)
        all_params["kind"] = kind
        all_params.update({str(k): v for k, v in (params or {}).items()})
        all_metrics: dict[str, float] = {"n_learned": float(meta["n_learned"])}
        # Changes of models (bandit.drift) the policy has been through: how many, and
        # each event (model, step, detected or declared) in changes.json.
        drift = meta.get("drift") or {}
        changes = list(drift.get("events", []))
        all_metrics["changes"] = float(sum(int(n) for n in drift.get("counts", {}).values()))
        report: Report | None = None
        if examples:
            report = score(policy, examples, weights=weights)
            all_metrics.update(report.metrics("ope."))
            observed = observed_point("logging policy", examples)
            if observed is not None:
                all_metrics["logged.quality"] = observed.quality
                all_metrics["logged.cost_usd"] = observed.cost_usd
        all_metrics.update({str(k): float(v) for k, v in (metrics or {}).items()})
        all_metrics = {metric_key(k): v for k, v in all_metrics.items() if math.isfinite(v)}
        with self._fluent() as mlflow, tempfile.TemporaryDirectory() as tmp:
            import mlflow.pyfunc

            d = Path(tmp)
            (d / POLICY_FILE).write_bytes(blob)
            (d / "catalog.yaml").write_text(policy.catalog.to_yaml())
            (d / "features.json").write_text(json.dumps(_feature_config(meta), indent=2))
            (d / "policy_model.py").write_text(_MODEL_CODE)
            run_tags = {KIND_TAG: kind, **(tags or {})}
            with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name,
                                  tags=run_tags):
                mlflow.log_params({k: _param(v) for k, v in all_params.items()})
                mlflow.log_metrics(all_metrics)
                for name in (POLICY_FILE, "catalog.yaml", "features.json"):
                    mlflow.log_artifact(str(d / name))
                if report is not None:
                    mlflow.log_dict(summary(report), "ope.json")
                if changes:
                    mlflow.log_dict({"changes": changes,
                                     "counts": drift.get("counts", {})}, "changes.json")
                if frontier:
                    mlflow.log_dict({"frontier": [list(p) for p in frontier]}, "frontier.json")
                info = mlflow.pyfunc.log_model(
                    name="policy",
                    python_model=str(d / "policy_model.py"),
                    artifacts={"policy": str(d / POLICY_FILE)},
                    pip_requirements=_requirements(),
                    signature=_signature(),
                    input_example=_input_example(),
                    registered_model_name=self.model_name,
                )
                version = int(info.registered_model_version)
                mlflow.set_tag(VERSION_TAG, f"v{version}")
                mlflow.set_tag(ALIASES_TAG, "")
                if run_name is None:  # known only now that the version is
                    mlflow.set_tag("mlflow.runName", run_title(version, kind))
                fig = _figure(f"v{version}", report, examples, frontier,
                              title=f"v{version} ({kind}): cost vs quality")
                if fig is not None:
                    mlflow.log_figure(fig, "cost_quality.png")
            self.client.set_model_version_tag(self.model_name, str(version), KIND_TAG, kind)
            if alias is not None:
                self._set_alias(alias, version)
        self._blobs[version] = blob
        return self.show(version)

    def _sync_aliases(self, *versions: int | None) -> None:
        """Write each version's aliases into its run: the ``routebandit.aliases`` tag,
        and the run's name when routebandit named it (``policy v2 (train, champion)``)."""
        with _translated():
            for n in dict.fromkeys(v for v in versions if v is not None):
                mv = self.client.get_model_version(self.model_name, str(n))
                run = self.client.get_run(str(mv.run_id))
                aliases = sorted(mv.aliases or ())
                self.client.set_tag(run.info.run_id, ALIASES_TAG, ",".join(aliases))
                if (run.info.run_name or "").startswith(f"policy v{n} ("):
                    kind = str(run.data.tags.get(KIND_TAG, ""))
                    self.client.update_run(run.info.run_id, name=run_title(n, kind, aliases))

    def recent_versions(self, limit: int = 200) -> list[VersionInfo]:
        """The newest ``limit`` versions with their runs' params, metrics and tags, newest
        first, in two searches (:meth:`list_versions` reads every run on its own)."""
        with _translated():
            found = self.client.search_model_versions(f"name='{self.model_name}'")
            newest = sorted(found, key=lambda mv: -int(mv.version))[:limit]
            if not newest:
                return []
            # (the search leaves the versions' aliases out: the registered model has them)
            held = self.client.get_registered_model(self.model_name).aliases or {}
            runs: dict[str, Any] = {}
            ids = [str(mv.run_id) for mv in newest]
            for start in range(0, len(ids), 100):
                chunk = ", ".join(f"'{i}'" for i in ids[start:start + 100])
                for run in self.client.search_runs([self.experiment_id()],
                                                   f"attributes.run_id IN ({chunk})",
                                                   max_results=100):
                    runs[run.info.run_id] = run
        out = []
        for mv in newest:
            found_run = runs.get(str(mv.run_id))
            tags = dict(found_run.data.tags) if found_run is not None else {}
            out.append(VersionInfo(
                version=int(mv.version), run_id=str(mv.run_id),
                aliases=tuple(sorted(a for a, n in held.items() if int(n) == int(mv.version))),
                created_ms=int(mv.creation_timestamp or 0), kind=str(tags.get(KIND_TAG, "")),
                params=dict(found_run.data.params) if found_run is not None else {},
                metrics=dict(found_run.data.metrics) if found_run is not None else {},
                tags=tags))
        return out

    def log_run(
        self,
        *,
        kind: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        frontier: Sequence[tuple[float, float]] = (),
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> str:
        """Log a run without a policy (e.g. a replay of a fixed baseline); return its id."""
        with self._fluent() as mlflow:
            with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name,
                                  tags={KIND_TAG: kind, **(tags or {})}) as run:
                if params:
                    mlflow.log_params({str(k): _param(v) for k, v in params.items()})
                if metrics:
                    mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()
                                        if math.isfinite(float(v))})
                if frontier:
                    mlflow.log_dict({"frontier": [list(p) for p in frontier]}, "frontier.json")
                    fig = _figure(run_name or kind, None, (), frontier)
                    if fig is not None:
                        mlflow.log_figure(fig, "cost_quality.png")
            return str(run.info.run_id)

    def log_replay(self, doc: Mapping[str, Any], *, run_name: str | None = None) -> str:
        """Log one ``routebandit replay`` result (its ``--json`` document) as a run.

        Params: the replay configuration; metrics: the headline numbers of the bandit
        and of every baseline (``<baseline>.<metric>``); artifacts: the document, the
        bandit's frontier and a cost-quality plot. Returns the run id.
        """
        params = _flatten(doc.get("config", {}), "replay.")
        params.update({f"data.{k}": v for k, v in doc.get("data", {}).items()
                       if isinstance(v, (str, int, float))})
        metrics: dict[str, float] = {}
        for key in _HEADLINES:
            if isinstance(doc.get(key), (int, float)):
                metrics[key] = float(doc[key])
        best = doc.get("best_single") or {}
        for key in ("quality", "cost_per_prompt"):
            if isinstance(best.get(key), (int, float)):
                metrics[f"best_single.{key}"] = float(best[key])
        for name, base in (doc.get("baselines") or {}).items():
            for key in _HEADLINES:
                if isinstance(base.get(key), (int, float)):
                    metrics[f"{name}.{key}"] = float(base[key])
        # Clusters of meaning: their number a parameter (with the embedder, in config),
        # how they follow the task column and what they weigh metrics.
        clusters = doc.get("clusters") or {}
        if "n_clusters" in clusters:
            params["clusters.n_clusters"] = clusters["n_clusters"]
        for key in ("n_leaves", "depth", "checkpoint_bytes", "purity", "purity_top", "nmi"):
            if isinstance(clusters.get(key), (int, float)):
                metrics[f"clusters.{key}"] = float(clusters[key])
        frontier = [(float(p["cost_per_prompt"]), float(p["quality"]))
                    for p in doc.get("frontier", [])]
        if run_name is None:  # e.g. "replay outcomes.csv seed 0"
            source = Path(str(doc.get("data", {}).get("source", "") or "")).name
            seed = doc.get("config", {}).get("seed")
            run_name = " ".join(["replay", *([source] if source else []),
                                 *([f"seed {seed}"] if seed is not None else [])])
        run_id = self.log_run(kind="replay", params=params, metrics=metrics,
                              frontier=frontier, run_name=run_name)
        with _translated():
            self.client.log_dict(run_id, dict(doc), "replay.json")
        return run_id

    # -- the registry ---------------------------------------------------------------
    def _model_version(self, ref: str | int) -> ModelVersion:
        with _translated():
            n = version_number(ref)
            if n is not None:
                return self.client.get_model_version(self.model_name, str(n))
            if ref not in ALIASES:
                raise TrackingError(
                    f"version: expected a number, v<number>, champion or challenger; got {ref!r}"
                )
            return self.client.get_model_version_by_alias(self.model_name, str(ref))

    def resolve(self, ref: str | int) -> int:
        """The version number ``ref`` (a number, ``vN`` or an alias) points to."""
        return int(self._model_version(ref).version)

    def alias_version(self, alias: str) -> int | None:
        """The version an alias points to, or ``None`` when it (or the model) is unset.

        Any other failure (the store is unreachable) raises :class:`TrackingError`.
        """
        try:
            return self.resolve(alias)
        except TrackingError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise

    def show(self, ref: str | int) -> VersionInfo:
        mv = self._model_version(ref)
        with _translated():
            run = self.client.get_run(str(mv.run_id))
        return VersionInfo(
            version=int(mv.version),
            run_id=str(mv.run_id),
            aliases=tuple(sorted(mv.aliases or ())),
            created_ms=int(mv.creation_timestamp or 0),
            kind=str(run.data.tags.get(KIND_TAG, "")),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
        )

    def list_versions(self) -> list[VersionInfo]:
        """Every registered version, newest first."""
        with _translated():
            found = self.client.search_model_versions(f"name='{self.model_name}'")
        return sorted((self.show(int(mv.version)) for mv in found),
                      key=lambda v: -v.version)

    def load_blob(self, ref: str | int) -> tuple[int, bytes]:
        mv = self._model_version(ref)
        n = int(mv.version)
        if n not in self._blobs:
            with _translated(), tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(str(mv.run_id), POLICY_FILE, tmp)
                self._blobs[n] = Path(path).read_bytes()
        return n, self._blobs[n]

    def load_version(self, ref: str | int) -> Policy:
        """The policy of a version (``champion``, ``challenger``, ``3`` or ``v3``).

        It decides exactly as the policy that was logged, and its decisions carry the
        version name ``vN``.
        """
        n, blob = self.load_blob(ref)
        policy = Policy.from_bytes(blob)
        policy.set_version(f"v{n}")  # the logged name becomes the parent
        return policy

    def load_pyfunc(self, ref: str | int) -> Any:
        """The version as an ``mlflow.pyfunc.PyFuncModel`` (DataFrame of prompts in)."""
        n = self.resolve(ref)
        with self._fluent() as mlflow:
            import mlflow.pyfunc

            return mlflow.pyfunc.load_model(f"models:/{self.model_name}/{n}")

    def _set_alias(self, alias: str, version: int) -> None:
        if alias not in ALIASES:
            raise TrackingError(f"alias: must be one of {', '.join(ALIASES)}, got {alias!r}")
        if alias == CHAMPION:
            self.promote(version)
        else:
            previous = self.alias_version(alias)
            with _translated():
                self.client.set_registered_model_alias(self.model_name, alias, str(version))
            self._sync_aliases(previous, version)

    def set_challenger(self, ref: str | int) -> VersionInfo:
        n = self.resolve(ref)
        self._set_alias(CHALLENGER, n)
        return self.show(n)

    def _history(self) -> list[int]:
        with _translated():
            rm = self.client.get_registered_model(self.model_name)
        return [int(v) for v in json.loads(rm.tags.get(HISTORY_TAG, "[]"))]

    def _write_history(self, history: list[int]) -> None:
        with _translated():
            self.client.set_registered_model_tag(
                self.model_name, HISTORY_TAG, json.dumps(history[-HISTORY_MAX:])
            )

    def promote(self, ref: str | int) -> VersionInfo:
        """Make ``ref`` the champion; the previous champion is remembered for rollback."""
        n = self.resolve(ref)
        previous = self.alias_version(CHAMPION)
        if previous == n:
            return self.show(n)
        if previous is not None:
            self._write_history([*self._history(), previous])
        with _translated():
            self.client.set_registered_model_alias(self.model_name, CHAMPION, str(n))
            self.client.set_model_version_tag(self.model_name, str(n),
                                              "routebandit.promoted_at", _now())
            if self.alias_version(CHALLENGER) == n:
                self.client.delete_registered_model_alias(self.model_name, CHALLENGER)
        self._sync_aliases(previous, n)
        return self.show(n)

    def rollback(self) -> VersionInfo:
        """Restore the champion before the last promotion."""
        history = self._history()
        if not history:
            raise TrackingError("rollback: no previous champion to restore")
        n = history.pop()
        self._write_history(history)
        current = self.alias_version(CHAMPION)
        with _translated():
            self.client.set_registered_model_alias(self.model_name, CHAMPION, str(n))
            self.client.set_model_version_tag(self.model_name, str(n),
                                              "routebandit.rolled_back_at", _now())
        self._sync_aliases(current, n)
        return self.show(n)

    def compare(self, a: str | int, b: str | int) -> list[tuple[str, str, str]]:
        """Rows ``(name, a, b)`` over the params and metrics of two versions."""
        va, vb = self.show(a), self.show(b)
        rows = [("version", va.name, vb.name),
                ("aliases", ",".join(va.aliases) or "-", ",".join(vb.aliases) or "-")]
        for key in sorted(set(va.params) | set(vb.params)):
            x, y = va.params.get(key, "-"), vb.params.get(key, "-")
            rows.append((key, x, y))
        for key in sorted(set(va.metrics) | set(vb.metrics)):
            rows.append((key, _fmt(va.metrics.get(key)), _fmt(vb.metrics.get(key))))
        return rows

    # -- evaluation ---------------------------------------------------------------
    def evaluate(
        self,
        candidate: str | int,
        examples: Sequence[Example],
        *,
        champion: str | int | None = CHAMPION,
        weights: RewardWeights | None = None,
        greedy: bool = False,
        log: bool = True,
        window: Mapping[str, str] | None = None,
        arms: Mapping[str, Estimate] | None = None,
    ) -> Evaluation:
        """Score ``candidate`` (and the champion) on logged traffic with IPS, SNIPS and DR.

        Both are scored on the same examples under the same reward (the logged one, or
        ``weights`` recomputed from quality, cost and latency). With ``log`` the result is
        an ``evaluation`` run in the experiment; ``arms`` (observed means per serving
        version, A/B mode) are logged with it as ``arm.<version>.reward``.
        """
        if not examples:
            raise TrackingError("evaluate: no logged decisions with a reward in the window")
        cand = self.show(candidate)
        reports: dict[str, Report] = {
            cand.name: score(self.load_version(cand.version), examples,
                             weights=weights, greedy=greedy)
        }
        champ: VersionInfo | None = None
        if champion is not None:
            n = self.alias_version(str(champion)) if version_number(champion) is None \
                else version_number(champion)
            if n is not None and n != cand.version:
                champ = self.show(n)
                reports[champ.name] = score(self.load_version(n), examples,
                                            weights=weights, greedy=greedy)
        run_id = None
        if log:
            metrics: dict[str, float] = {}
            for label, rep in reports.items():
                role = "candidate" if label == cand.name else "champion"
                metrics.update(rep.metrics(f"{role}."))
            for version, est in (arms or {}).items():
                metrics.update({f"arm.{version}.reward": est.value,
                                f"arm.{version}.reward_low": est.low,
                                f"arm.{version}.reward_high": est.high,
                                f"arm.{version}.n": float(est.n)})
            params = {"candidate": cand.name, "champion": champ.name if champ else "-",
                      "greedy": greedy, "weights": json.dumps(weights.to_dict())
                      if weights else "logged", **(window or {})}
            run_id = self.log_run(kind="evaluation", params=params, metrics=metrics,
                                  tags={"routebandit.candidate": cand.name},
                                  run_name=f"evaluate {cand.name}")
        return Evaluation(candidate=cand, champion=champ, reports=reports, run_id=run_id)

    def runs(self, kind: str | None = None) -> Any:
        """The experiment's runs as a DataFrame (``mlflow.search_runs``)."""
        with self._fluent() as mlflow:
            flt = f"tags.`{KIND_TAG}` = '{kind}'" if kind else ""
            return mlflow.search_runs(experiment_ids=[self.experiment_id()], filter_string=flt)


# -- helpers ------------------------------------------------------------------------


_HEADLINES = ("cost_pct_for_95", "cost_pct_for_98", "quality_pct_at_10", "quality_pct_at_30",
              "aiq", "elapsed_seconds")


def _flatten(raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _policy_params(meta: Mapping[str, Any]) -> dict[str, Any]:
    cfg = meta["config"]
    out: dict[str, Any] = {
        "vw_args": " ".join(meta["vw_args"]),
        "exploration": cfg["exploration"],
        "feature_version": meta["feature_version"],
        "catalog_digest": meta["catalog_digest"],
        "catalog_models": ",".join(m["name"] for m in meta["catalog"]["models"]),
        "n_learned": meta["n_learned"],
        "parent_version": _parent(meta),
        "seed": meta["seed"],
    }
    for k, v in cfg.items():
        out[f"config.{k}"] = v
    for k, v in meta["weights"].items():
        out[f"weights.{k}"] = v
    return out


def _parent(meta: Mapping[str, Any]) -> str:
    # A policy loaded from vN and learning since is vN's child; a policy that was given
    # a working name (``train``, ``local``) names its parent itself.
    version = str(meta.get("version") or "")
    if version_number(version) is not None:
        return version
    return str(meta.get("parent") or "")


def _feature_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "feature_version": meta["feature_version"],
        "interactions": meta["config"]["interactions"],
        "shared_namespaces": {"u": "last user turn: words and bigrams",
                              "q": "its last paragraph", "s": "system prompt",
                              "t": "tags: tenant, task, script, language",
                              "n": "numeric features"},
        "action_namespaces": {"a": "model identity, provider, price, context, capabilities",
                              "c": "expected cost and latency penalties"},
        "current_feature_version": FEATURE_VERSION,
    }


def _figure(label: str, report: Report | None, examples: Sequence[Example],
            frontier: Sequence[tuple[float, float]], *, title: str | None = None) -> Any:
    from feedback.plots import cost_quality_figure

    policies: list[Point] = []
    if examples:
        obs = observed_point("logging policy", examples)
        if obs is not None:
            policies.append(obs)
    if report is not None:
        pt = report_point(f"{label} (estimated)", report)
        if pt is not None:
            policies.append(pt)
    models = model_points(examples)
    if not (models or policies or frontier):
        return None
    return cost_quality_figure(models, policies, frontier=frontier, title=title or label)


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", name, required=(name == "prompt"))
                     for name in ("prompt", "messages", "tenant", "task")])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("string")]))


def _input_example() -> Any:
    import pandas as pd

    return pd.DataFrame({"prompt": ["How do I reverse a list in Python?"]})


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "vowpal-wabbit-next", "numpy", "pyyaml", "routebandit"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
