"""MLflow tracking: one run per pipeline execution, logged by the evaluate stage.

Everything a run holds is first written to a JSON record on disk (params, curves, metrics,
tags); :func:`log_record` then sends it. Because the record is complete, the run is complete
even when every upstream stage came from DVC's cache, and a record that could not be sent
(store unreachable) can be sent later without losing anything.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from irtune.config import Config, TrackingConfig, check_tracking_uri, flatten
from irtune.evaluate import RERANK_VS_FIRST_STAGE
from irtune.mirror import is_hub_id
from irtune.pipeline import repo_root

log = logging.getLogger(__name__)

RUN_KEY_TAG = "irtune.run_key"
#: The run's logged bi-encoder (``models:/<id>``), for ``make register``.
MODEL_URI_TAG = "irtune.model_uri"
#: Where a logged model goes in the run, and the registry's name for the flavor's files.
MODEL_NAME = "bi-encoder"


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


def _git(*args: str) -> str:
    """``git <args>``'s output in the current folder, or "" where it fails."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """The commit the workspace (or the experiment's temporary copy) is based on."""
    return _git("rev-parse", "HEAD")


def system_tags() -> dict[str, str]:
    """MLflow's own system tags, so that the runs page's Source, Version and User columns
    fill as they do for a run MLflow started itself: the pipeline (``dvc.yaml`` of the
    repository) is the source, its commit the version. The git remote's URL is recorded
    only without credentials in it."""
    tags = {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": str(repo_root() / "dvc.yaml"),
        "mlflow.source.git.commit": git_commit(),
        "mlflow.source.git.branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "mlflow.user": _user(),
    }
    remote = _git("remote", "get-url", "origin")
    if remote and "@" not in remote.split("://", 1)[-1].split("/", 1)[0]:
        tags["mlflow.source.git.repoURL"] = remote
    return {k: v for k, v in tags.items() if v}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return ""


def pipeline_start() -> float:
    """When the pipeline that runs this stage started (seconds since the epoch).

    The stage's nearest ``dvc`` ancestor process is the pipeline: ``dvc repro`` or
    ``dvc exp run`` in the workspace, ``dvc exp exec-run`` for a queued experiment. Its
    start is the run's start, so the MLflow run spans every stage that ran, not only the
    logging. Outside DVC (a stage run by hand), the stage's own process start.
    """
    import psutil

    me = psutil.Process()
    try:
        for parent in me.parents():
            if _is_dvc(parent.cmdline()):
                return parent.create_time()
    except (psutil.Error, OSError):  # an ancestor gone or hidden: fall back
        pass
    return me.create_time()


def _is_dvc(argv: list[str]) -> bool:
    """Whether a command line runs DVC (``dvc ...``, ``python .../dvc ...`` or
    ``python -m dvc ...``)."""
    head = argv[:3]
    return any(Path(arg).name == "dvc" for arg in head[:2]) or head[1:3] == ["-m", "dvc"]


def dataset_input(cfg: Config, data_dir: Path, counts: dict[str, Any]) -> dict[str, Any]:
    """The evaluated dataset as an MLflow dataset input (``mlflow.log_input``'s entity),
    so the runs page's Dataset column names it.

    Args:
        cfg: The config: the dataset's name, source and test split.
        data_dir: The BEIR folder the run was evaluated on; its files' bytes make the
            digest, so two runs on the same data show the same dataset.
        counts: The download stage's counts, the dataset's profile.

    Returns:
        The fields of :class:`mlflow.entities.Dataset`, plus ``context`` (the split).
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    digest = hashlib.md5(usedforsecurity=False)
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(data_dir).as_posix().encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    source = cfg.dataset.source
    if is_hub_id(source):
        origin = HuggingFaceDatasetSource(path=source, split=cfg.dataset.test_split)
    else:  # a path (MLflow's "local" source) or a URL ("http")
        if "://" not in source:
            source = str(Path(source).expanduser().resolve())
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": all local
            warnings.simplefilter("ignore", UserWarning)
            origin = resolve_dataset_source(source)
    profile = {k: v for k, v in counts.items() if isinstance(v, int)}
    return {
        "name": f"{cfg.dataset.name}",
        "digest": digest.hexdigest()[:8],
        "source_type": origin._get_source_type(),
        "source": origin.to_json(),
        "profile": json.dumps(profile, sort_keys=True),
        "context": cfg.dataset.test_split,
    }


def build_record(
    cfg: Config,
    metrics: dict[str, dict[str, float]],
    significance: dict[str, Any],
    train_history: dict[str, Any],
    artifacts: list[Path],
    retrieve_choices: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    rerank_choices: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """Assemble everything one MLflow run holds.

    Args:
        cfg: The composed config; every key becomes a param.
        metrics: ``{"retrieve": {...}, "rerank": {...}}`` as in ``metrics/eval.json``.
        significance: The comparison with the baseline (``metrics/significance.json``);
            each delta, its confidence interval and p-value become metrics
            (``rerank.ndcg_at_10_p_value``...), each verdict a tag, and the test and
            correction behind them the tags ``significance.test`` and
            ``significance.correction``; the reranked run against its first stage the
            same way (``rerank_vs_first_stage.*``).
        train_history: The train stage's summary and curves.
        artifacts: Files to attach.
        retrieve_choices: The retrieve stage's ``metrics/retrieve.json``: what it chose on
            dev (feedback ``prf_k``/``prf_beta``, a fusion's ``dense_weight`` or ``rrf_k``)
            becomes ``chosen.*`` metrics, the dev scores behind it ``dev_*`` metrics, and a
            choice that fell back (no dev split) says so in a ``fallback.*`` tag.
        data: The download stage's ``metrics/download.json``: its counts become ``data.*``
            metrics, and the ``dev_split`` tag says where dev came from (a carve-out: how
            many train queries, which seed; its query ids are in the file, an artifact).
        rerank_choices: The rerank stage's ``metrics/rerank.json``: its depth and fusion
            chosen on dev become ``chosen.rerank_*`` metrics, the dev scores behind them
            ``rerank_dev_*`` metrics, a fallback a ``fallback.rerank_fusion`` tag.
        data_dir: The evaluated BEIR folder: the run's dataset input (:func:`dataset_input`).
        model_dir: The trained bi-encoder, logged with MLflow's ``sentence_transformers``
            flavor when ``tracking.log_model`` is on (``make register`` registers it).

    Returns:
        A JSON-serialisable record; ``run_key`` identifies it across retries.
    """
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    compared = {
        run: significance[run]
        for run in ("retrieve", "rerank", RERANK_VS_FIRST_STAGE)
        if run in significance
    }
    data = data or {}
    retrieve_choices = retrieve_choices or {}
    rerank_choices = rerank_choices or {}
    return {
        "run_key": uuid.uuid4().hex,
        "run_name": exp_name or f"workspace-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        "experiment": cfg.tracking.experiment,
        # The pipeline's span, not the logging's: MLflow's Duration column.
        "start_time": int(pipeline_start() * 1000),
        "end_time": int(time.time() * 1000),
        "params": {k: str(v) for k, v in flatten(cfg).items()},
        "inputs": [dataset_input(cfg, data_dir, data)] if data_dir else [],
        "model": (
            {"path": str(model_dir), "trust_remote_code": cfg.model.trust_remote_code}
            if model_dir and cfg.tracking.log_model
            else None
        ),
        "tags": system_tags()
        | {
            "git_commit": git_commit(),
            "dvc_exp_name": exp_name,
            "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            "dataset": cfg.dataset.name,
            "base_model": cfg.model.base,
            "loss": cfg.loss.name,
            "dev_split": _dev_origin(cfg, data),
        }
        | {
            f"fallback.{prefix}{key.removesuffix('_fallback')}": value
            for prefix, choices in (("", retrieve_choices), ("rerank_", rerank_choices))
            for key, value in choices.items()
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
        }
        | device_tags(train_history),
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
        | _choices(rerank_choices, prefix="rerank_")
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


def device_tags(train_history: dict[str, Any]) -> dict[str, str]:
    """What trained the model (``metrics/train.json``'s ``device``) as the tags
    ``device.type``, ``device.name``, ``device.count``, ``device.precision`` and
    ``device.claimed``: strings, which MLflow keeps as tags rather than metrics."""
    return {f"device.{key}": str(value) for key, value in train_history.get("device", {}).items()}


def _dev_origin(cfg: Config, data: dict[str, Any]) -> str:
    """Where the dev split came from, in words: the MLflow tag ``dev_split``."""
    carve = data.get("dev_carve")
    if carve:
        return (
            f"carved from {carve['from_split']}: {carve['queries']} queries "
            f"(fraction {carve['fraction']:g}, seed {carve['seed']})"
        )
    return cfg.dataset.dev or "none"


def _choices(choices: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The dev choices of ``metrics/retrieve.json`` (or, with ``prefix``, of another stage's
    file) as metrics; the grids stay in the file."""
    out: dict[str, float] = {}
    for key, value in choices.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "top_k":
            out[f"chosen.{prefix}{key}"] = value
        elif isinstance(value, dict) and key.startswith("dev_") and not key.endswith("_grid"):
            out |= {f"{prefix}{key}.{name}": v for name, v in value.items()}
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
        The MLflow run id, or None if the store could not be reached or refused the run: a
        warning says so and the record, with copies of its files, waits in
        :func:`pending_dir` for ``make sync``.
    """
    uri = tracking_uri(cfg)
    # A store that does not answer should cost seconds, not MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        return _log(record, uri)
    except Exception as exc:  # tracking must never fail the pipeline
        spool = _spool(record, uri)
        log.warning(
            "MLflow store %s %s (%s); metrics stay on disk and the run waits in %s for `make sync`",
            uri,
            _failure(exc),
            exc,
            spool,
        )
        return None


def _spool(record: dict[str, Any], uri: str) -> Path:
    """Write ``record`` to :func:`pending_dir` with copies of its artifacts and model (a
    queued experiment's files vanish with its temporary copy); returns the record's path."""
    files = pending_dir() / record["run_key"]
    files.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for path in map(Path, record["artifacts"]):
        if path.is_file():
            artifacts.append(str(shutil.copy2(path, files / path.name)))
    model = record.get("model")
    if model and Path(model["path"]).is_dir():
        copy = shutil.copytree(model["path"], files / "model", dirs_exist_ok=True)
        model = model | {"path": str(copy)}
    spool = pending_dir() / f"{record['run_key']}.json"
    waiting = record | {"artifacts": artifacts, "model": model, "tracking_uri": uri}
    spool.write_text(json.dumps(waiting, indent=2), encoding="utf-8")
    return spool


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
        shutil.rmtree(path.with_suffix(""), ignore_errors=True)
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
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as e:
        # Another process (a parallel queue worker, a teammate) created it meanwhile.
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _log(record: dict[str, Any], uri: str) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
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
    start, end = record.get("start_time"), record.get("end_time")
    run = client.create_run(exp_id, start_time=start, run_name=record["run_name"], tags=tags)
    run_id = run.info.run_id
    stamp = end or int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(k, float(v), stamp, 0) for k, v in record["metrics"].items()]
    metrics += [
        Metric(name, float(value), stamp, int(step))
        for name, points in record["histories"].items()
        for step, value in points
    ]
    params = [Param(k, v) for k, v in record["params"].items()]
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    # log_batch takes at most 100 params and 1000 metrics a call.
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    inputs = [
        DatasetInput(
            Dataset(**{k: v for k, v in d.items() if k != "context"}),
            [InputTag("mlflow.data.context", d["context"])],
        )
        for d in record.get("inputs", [])
    ]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    for path in record["artifacts"]:
        if Path(path).exists():
            client.log_artifact(run_id, path)
    model = record.get("model")
    if model and Path(model["path"]).is_dir():
        client.set_tag(run_id, MODEL_URI_TAG, _log_model(run_id, uri, **model))
    client.set_terminated(run_id, end_time=end)
    log.info("Logged MLflow run %s (%s) to %s", run_id, record["run_name"], uri)
    return run_id


def _log_model(run_id: str, uri: str, path: str, trust_remote_code: bool) -> str:
    """Log the bi-encoder at ``path`` to run ``run_id`` with MLflow's
    ``sentence_transformers`` flavor; returns its model URI (``models:/<id>``).

    The requirements are the installed versions, stated rather than inferred (inference
    loads the model again in a subprocess).
    """
    import mlflow
    import sentence_transformers
    import torch
    import transformers

    from irtune.models import load_bi_encoder

    model = load_bi_encoder(path, trust_remote_code=trust_remote_code)
    requirements = [
        f"sentence-transformers=={sentence_transformers.__version__}",
        f"transformers=={transformers.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
    ]
    with fluent_store(uri), mlflow.start_run(run_id=run_id):
        info = mlflow.sentence_transformers.log_model(
            model, name=MODEL_NAME, pip_requirements=requirements
        )
    return info.model_uri


@contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``register_model``...) at ``uri`` for
    the block, then restore exactly what was set before. ``mlflow.set_tracking_uri`` also
    writes ``$MLFLOW_TRACKING_URI``, which :func:`tracking_uri` reads: restoring it from
    ``get_tracking_uri()`` would leave MLflow's default store there for every later run."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable
