"""MLflow tracking: one run per pipeline execution, logged by the evaluate stage.

Everything a run holds is first written to a JSON record on disk (params, curves, metrics,
tags); :func:`log_record` then sends it. Because the record is complete, the run is complete
even when every upstream stage came from DVC's cache, and a record that could not be sent
(store unreachable) can be sent later without losing anything.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from irtune.config import Config, TrackingConfig, check_tracking_uri, flatten
from irtune.pipeline import repo_root

log = logging.getLogger(__name__)

RUN_KEY_TAG = "irtune.run_key"


def tracking_uri(cfg: TrackingConfig) -> str:
    """The MLflow store: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite
    file ``mlflow.db`` at the repository root (an absolute path).

    Raises:
        ConfigError: If ``$MLFLOW_TRACKING_URI`` embeds credentials (``tracking.uri`` is
            checked when the config loads).
    """
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit() -> str:
    """The commit the workspace (or the experiment's temporary copy) is based on."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def build_record(
    cfg: Config,
    metrics: dict[str, dict[str, float]],
    significance: dict[str, Any],
    train_history: dict[str, Any],
    artifacts: list[Path],
    retrieve_choices: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble everything one MLflow run holds.

    Args:
        cfg: The composed config; every key becomes a param.
        metrics: ``{"retrieve": {...}, "rerank": {...}}`` as in ``metrics/eval.json``.
        significance: The comparison with the baseline (``metrics/significance.json``);
            each delta, its confidence interval and p-value become metrics
            (``rerank.ndcg_at_10_p_value``...), each verdict a tag, and the test and
            correction behind them the tags ``significance.test`` and
            ``significance.correction``.
        train_history: The train stage's summary and curves.
        artifacts: Files to attach.
        retrieve_choices: The retrieve stage's ``metrics/retrieve.json``: what it chose on
            dev (feedback ``prf_k``/``prf_beta``, a fusion's ``dense_weight`` or ``rrf_k``)
            becomes ``chosen.*`` metrics, the dev scores behind it ``dev_*`` metrics, and a
            choice that fell back (no dev split) says so in a ``fallback.*`` tag.
        data: The download stage's ``metrics/download.json``: its counts become ``data.*``
            metrics, and the ``dev_split`` tag says where dev came from (a carve-out: how
            many train queries, which seed; its query ids are in the file, an artifact).

    Returns:
        A JSON-serialisable record; ``run_key`` identifies it across retries.
    """
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    compared = {run: significance[run] for run in ("retrieve", "rerank") if run in significance}
    data = data or {}
    retrieve_choices = retrieve_choices or {}
    return {
        "run_key": uuid.uuid4().hex,
        "run_name": exp_name or f"workspace-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        "experiment": cfg.tracking.experiment,
        "params": {k: str(v) for k, v in flatten(cfg).items()},
        "tags": {
            "git_commit": git_commit(),
            "dvc_exp_name": exp_name,
            "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            "dataset": cfg.dataset.name,
            "base_model": cfg.model.base,
            "loss": cfg.loss.name,
            "dev_split": _dev_origin(cfg, data),
        }
        | {
            f"fallback.{key.removesuffix('_fallback')}": value
            for key, value in retrieve_choices.items()
            if key.endswith("_fallback")
        }
        | ({"sweep": cfg.sweep.name, "sweep_id": cfg.sweep.id} if cfg.sweep.name else {})
        | {
            f"verdict.{run}.{m}": r["verdict"]
            for run, res in compared.items()
            for m, r in res.items()
        }
        | {
            f"significance.{key}": str(significance[key])
            for key in ("test", "correction")
            if key in significance
        },
        # The headline: the final run's metrics (rerank; it passes retrieval through when
        # rerank.top_k is 0) under their bare names, so MLflow's compare view lists them first.
        "metrics": dict(metrics.get("rerank", {}))
        | {
            f"{run}.{name}": value
            for run, values in metrics.items()
            for name, value in values.items()
        }
        | {f"train.{k}": v for k, v in train_history.get("summary", {}).items()}
        | _choices(retrieve_choices)
        | {f"data.{k}": v for k, v in data.items() if isinstance(v, int | float)}
        | {
            f"{run}.{m}_{key}": r[key]
            for run, res in compared.items()
            for m, r in res.items()
            for key in ("delta", "ci_low", "ci_high", "p_value")
            if key in r
        },
        "histories": _histories(train_history),
        "artifacts": [str(p) for p in artifacts],
    }


def _dev_origin(cfg: Config, data: dict[str, Any]) -> str:
    """Where the dev split came from, in words: the MLflow tag ``dev_split``."""
    carve = data.get("dev_carve")
    if carve:
        return (
            f"carved from {carve['from_split']}: {carve['queries']} queries "
            f"(fraction {carve['fraction']:g}, seed {carve['seed']})"
        )
    return cfg.dataset.dev or "none"


def _choices(retrieve: dict[str, Any]) -> dict[str, float]:
    """The dev choices of ``metrics/retrieve.json`` as metrics; the grids stay in the file."""
    out: dict[str, float] = {}
    for key, value in retrieve.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "top_k":
            out[f"chosen.{key}"] = value
        elif isinstance(value, dict) and key.startswith("dev_") and not key.endswith("_grid"):
            out |= {f"{key}.{name}": v for name, v in value.items()}
    return out


def _histories(train_history: dict[str, Any]) -> dict[str, list[list[float]]]:
    """Metric series as ``name -> [[step, value], ...]``."""
    series: dict[str, list[list[float]]] = {}
    for point in train_history.get("loss_curve", []):
        series.setdefault("train_loss", []).append([point["step"], point["loss"]])
        series.setdefault("learning_rate", []).append([point["step"], point["learning_rate"]])
    for point in train_history.get("dev_curve", []):
        for key, value in point.items():
            if key.startswith("dev_"):
                series.setdefault(key, []).append([point["step"], value])
    return series


def pending_dir() -> Path:
    """Where records that could not be sent wait for ``make sync`` (at the repo root, so
    queued experiments' records land there too)."""
    return repo_root() / ".irtune" / "pending"


def log_record(record: dict[str, Any], cfg: TrackingConfig) -> str | None:
    """Send a record to MLflow as one run, unless a run with its ``run_key`` exists.

    Returns:
        The MLflow run id, or None if the store could not be reached: a warning says so and
        the record waits in :func:`pending_dir` for ``make sync``.
    """
    uri = tracking_uri(cfg)
    # A store that does not answer should cost seconds, not MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        return _log(record, uri)
    except Exception as exc:  # tracking must never fail the pipeline
        spool = pending_dir() / f"{record['run_key']}.json"
        spool.parent.mkdir(parents=True, exist_ok=True)
        spool.write_text(json.dumps(record | {"tracking_uri": uri}, indent=2), encoding="utf-8")
        log.warning(
            "MLflow store %s %s (%s); metrics stay on disk and the run waits in %s for `make sync`",
            uri,
            _failure(exc),
            exc,
            spool,
        )
        return None


def _failure(exc: Exception) -> str:
    """What went wrong, in words: a server that refused the login is no unreachable store."""
    if getattr(exc, "error_code", None) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # 401, 403
        return (
            "refused the credentials (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            "missing, wrong, or without permission)"
        )
    return "unreachable"


def sync(cfg: TrackingConfig | None = None) -> tuple[int, int]:
    """Send every pending record; a record already in the store is not logged twice.

    Args:
        cfg: Tracking config whose store to use; None sends each record to the store it
            was meant for.

    Returns:
        ``(sent, still_pending)``.
    """
    sent = failed = 0
    for path in sorted(pending_dir().glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        meant_for = record.pop("tracking_uri", None)
        uri = tracking_uri(cfg) if cfg else meant_for
        try:
            _log(record, uri)
        except Exception as exc:  # keep it for the next try
            log.warning("Still cannot reach %s for %s: %s", uri, path.name, exc)
            failed += 1
            continue
        path.unlink()
        sent += 1
    return sent, failed


def experiment_id(client, name: str, uri: str) -> str:
    """The id of MLflow experiment ``name`` in the store at ``uri``, created if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    # Artifacts beside a SQLite store, by absolute path: MLflow's default (./mlruns from the
    # current folder) would put a queued experiment's files in its temporary copy.
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _log(record: dict[str, Any], uri: str) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = experiment_id(client, record["experiment"], uri)
    existing = client.search_runs(
        [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{record['run_key']}'"
    )
    if existing:
        log.info("Run %s is already in %s", existing[0].info.run_id, uri)
        return existing[0].info.run_id

    tags = record["tags"] | {RUN_KEY_TAG: record["run_key"], "mlflow.runName": record["run_name"]}
    run = client.create_run(exp_id, run_name=record["run_name"], tags=tags)
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in record["metrics"].items()]
    metrics += [
        Metric(name, float(value), now, int(step))
        for name, points in record["histories"].items()
        for step, value in points
    ]
    params = [Param(k, v) for k, v in record["params"].items()]
    client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    # log_batch takes at most 100 params and 1000 metrics a call.
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
    for path in record["artifacts"]:
        if Path(path).exists():
            client.log_artifact(run.info.run_id, path)
    client.set_terminated(run.info.run_id)
    log.info("Logged MLflow run %s (%s) to %s", run.info.run_id, record["run_name"], uri)
    return run.info.run_id
