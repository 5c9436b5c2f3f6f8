"""Register an experiment's bi-encoder in MLflow's model registry (``make register``).

Usage::

    python -m irtune.register --exp <dvc experiment>   # its latest MLflow run
    python -m irtune.register --best-of <sweep>        # the best member of its latest run
    # options: --name <registered model> (default irtune-<dataset>), --metric ndcg_at_10

Every run the evaluate stage logs carries its trained bi-encoder (``tracking.log_model``,
MLflow's ``sentence_transformers`` flavor). Registering makes it a version of a registered
model: the version's tags carry the recipe's test metrics and where it came from (the DVC
experiment, its baseline commit, the MLflow run), so a deployment can be traced back to
``dvc exp show`` and re-run. Loading it back::

    mlflow.sentence_transformers.load_model("models:/irtune-nfcorpus/1")
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from irtune.config import load_config
from irtune.errors import IrtuneError
from irtune.tracking import MODEL_URI_TAG, fluent_store, tracking_uri

log = logging.getLogger(__name__)

#: The test metrics a model version carries as tags (``metric.<name>``).
METRICS = ("ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100")
#: The run's tags a model version carries: where it came from.
ORIGIN_TAGS = (
    "dvc_exp_name",
    "dvc_exp_baseline_rev",
    "git_commit",
    "dataset",
    "base_model",
    "loss",
    "sweep",
    "sweep_id",
)


def find_run(client, experiment: str, exp: str = "", best_of: str = "", metric: str = "ndcg_at_10"):
    """The MLflow run whose model to register.

    Args:
        client: An ``MlflowClient`` on the store.
        experiment: The MLflow experiment (``tracking.experiment``).
        exp: A DVC experiment's name: its latest run with a logged model.
        best_of: A named sweep: of the members of its latest invocation that logged a
            model, the one with the highest ``metric``.
        metric: The metric ``best_of`` ranks by (the final run's, as MLflow shows it).

    Raises:
        IrtuneError: If no such run, or none with a logged model, is in the store.
    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise IrtuneError(f"no MLflow experiment '{experiment}' in {client.tracking_uri}")
    with_model = f"tags.`{MODEL_URI_TAG}` LIKE 'models:/%'"
    if exp:
        what = f"DVC experiment '{exp}'"
        runs = client.search_runs(
            [found.experiment_id],
            f"tags.dvc_exp_name = '{exp}' and {with_model}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    else:
        what = f"sweep '{best_of}'"
        runs = client.search_runs(
            [found.experiment_id],
            f"tags.sweep = '{best_of}' and {with_model}",
            order_by=["attributes.start_time DESC"],
        )
        if runs:
            latest = runs[0].data.tags["sweep_id"]
            members = [r for r in runs if r.data.tags.get("sweep_id") == latest]
            runs = [max(members, key=lambda r: r.data.metrics.get(metric, float("-inf")))]
    if not runs:
        raise IrtuneError(
            f"no MLflow run of {what} with a logged model in experiment '{experiment}' of "
            f"{client.tracking_uri} (was it run with tracking.log_model=false?)"
        )
    return runs[0]


def register(client, run, name: str = "") -> Any:
    """Register ``run``'s bi-encoder as a new version of registered model ``name``.

    Args:
        client: An ``MlflowClient`` on the store.
        run: A run :func:`find_run` returned.
        name: The registered model; default ``irtune-<dataset>``.

    Returns:
        The ``ModelVersion``, tagged with the run's metrics (``metric.<name>``) and origin.
    """
    import mlflow

    tags = run.data.tags
    name = name or f"irtune-{tags.get('dataset', 'model')}"
    version_tags = {key: tags[key] for key in ORIGIN_TAGS if tags.get(key)}
    version_tags |= {"mlflow_run_id": run.info.run_id, "mlflow_run_name": run.info.run_name}
    version_tags |= {
        f"metric.{m}": f"{run.data.metrics[m]:.4f}" for m in METRICS if m in run.data.metrics
    }
    with fluent_store(client.tracking_uri):
        version = mlflow.register_model(tags[MODEL_URI_TAG], name, tags=version_tags)
    ndcg = run.data.metrics.get("ndcg_at_10")
    client.update_model_version(
        name,
        version.version,
        description=(
            f"Bi-encoder of irtune run {run.info.run_name} ({run.info.run_id})"
            + (f": test ndcg_at_10 {ndcg:.4f} on {tags.get('dataset')}" if ndcg else "")
        ),
    )
    return client.get_model_version(name, version.version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--exp", default="", help="a DVC experiment's name")
    which.add_argument("--best-of", default="", help="a named sweep: its best member")
    parser.add_argument("--name", default="", help="registered model (default irtune-<dataset>)")
    parser.add_argument("--metric", default="ndcg_at_10", help="what --best-of ranks by")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the store")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mlflow.tracking import MlflowClient

    try:
        cfg = load_config(args.params)
        client = MlflowClient(tracking_uri=tracking_uri(cfg.tracking))
        run = find_run(client, cfg.tracking.experiment, args.exp, args.best_of, args.metric)
        version = register(client, run, args.name)
    except IrtuneError as exc:
        log.error("register failed: %s", exc)
        sys.exit(1)
    log.info(
        "Registered %s version %s from run %s (%s): load it with "
        "mlflow.sentence_transformers.load_model('models:/%s/%s')",
        version.name,
        version.version,
        run.info.run_name,
        run.info.run_id,
        version.name,
        version.version,
    )


if __name__ == "__main__":
    main()
