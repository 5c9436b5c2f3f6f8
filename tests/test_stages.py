"""Every stage script, run in-process through its CLI with dvc.yaml's own command lines, in
dvc.yaml's order, on the tiny assets (bad inputs: test_bad_inputs.py).

The stages run in a temporary workspace with a params.yaml built from the schema defaults
and overridden for the tiny assets, so this is the pipeline ``dvc repro`` runs, minus DVC.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import DVC_STAGES, STAGES, StageWorkspace, outputs, tiny_params

from irtune.beir import read_beir, stats
from irtune.config import EvaluateConfig
from irtune.encode import read_embeddings
from irtune.index import read_index
from irtune.models import load_bi_encoder
from irtune.runs import read_trec_run

METRICS = {"ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"}
TOP_K = 20


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, tiny_assets: dict[str, Path]
) -> StageWorkspace:
    """Run every stage in a fresh workspace."""
    root = tmp_path_factory.mktemp("workspace")
    params = tiny_params(
        tiny_assets,
        retrieve={"top_k": TOP_K},
        tracking={"uri": f"sqlite:///{root / 'mlflow.db'}"},
    )
    ws = StageWorkspace(root, params)
    ws.run_all()
    return ws


def _json(pipeline: StageWorkspace, rel: str) -> Any:
    return json.loads(pipeline.path(rel).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", STAGES)
def test_declared_outputs_exist(pipeline: StageWorkspace, name: str) -> None:
    """Every out, metrics and plots file dvc.yaml declares for the stage was written,
    non-empty."""
    declared = outputs(DVC_STAGES[name])
    assert declared
    for rel in declared:
        path = pipeline.path(rel)
        assert path.exists(), rel
        if path.is_dir():
            assert any(path.iterdir()), rel
        else:
            assert path.stat().st_size > 0, rel


def test_no_temporary_files_left(pipeline: StageWorkspace) -> None:
    """No atomic-write temporaries (.<name>.*.tmp) remain anywhere in the workspace."""
    leftovers = [p for p in pipeline.root.rglob(".*.tmp")]
    assert leftovers == []


def test_download_output(pipeline: StageWorkspace, tiny_beir: Path) -> None:
    """download copies the dataset faithfully and records its counts."""
    splits = ["train", "dev", "test"]
    raw = read_beir(pipeline.path("data/raw/${dataset.name}"), splits)
    src = read_beir(tiny_beir, splits)
    assert (raw.corpus, raw.queries, raw.qrels) == (src.corpus, src.queries, src.qrels)
    assert _json(pipeline, "metrics/download.json") == stats(src)


def test_prepare_output(pipeline: StageWorkspace, tiny_beir: Path) -> None:
    """prepare writes one MNRL row per positive train pair and counts them."""
    lines = pipeline.path("data/prepared/train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    src = read_beir(tiny_beir, ["train"])
    n_pairs = sum(g > 0 for docs in src.qrels["train"].values() for g in docs.values())
    assert len(rows) == n_pairs
    assert all(set(r) == {"anchor", "positive"} for r in rows)
    assert _json(pipeline, "metrics/prepare.json") == {
        "rows": n_pairs,
        "columns": ["anchor", "positive"],
    }


def test_train_output(pipeline: StageWorkspace) -> None:
    """train saves a loadable model and a history with summary, device, loss and one-epoch
    dev curve."""
    model = load_bi_encoder(str(pipeline.path("data/model")))
    assert model.get_embedding_dimension() == 32
    history = _json(pipeline, "metrics/train.json")
    assert set(history) == {"summary", "device", "loss_curve", "dev_curve"}
    assert history["device"]["count"] == 1 and history["device"]["precision"] == "fp32"
    assert history["summary"]["epochs"] == 1
    assert len(history["loss_curve"]) >= 2
    assert [p["epoch"] for p in history["dev_curve"]] == [1.0]


def test_encode_and_index_output(pipeline: StageWorkspace, tiny_beir: Path) -> None:
    """encode embeds every doc (unit vectors); index holds them all with the same ids."""
    corpus_ids = list(read_beir(tiny_beir, ["test"]).corpus)
    emb, ids = read_embeddings(pipeline.path("data/embeddings"))
    assert ids == corpus_ids
    assert emb.shape == (len(corpus_ids), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    index, index_ids = read_index(pipeline.path("data/index"))
    assert index_ids == corpus_ids
    assert index.ntotal == len(corpus_ids) and index.d == 32


@pytest.mark.parametrize(
    "run_file", ["data/runs/retrieve.trec", "data/runs/rerank.trec", "data/runs/baseline.trec"]
)
def test_run_outputs(pipeline: StageWorkspace, tiny_beir: Path, run_file: str) -> None:
    """Each run answers every test query with retrieve.top_k docs from the corpus; the
    baseline goes as deep as the deepest metric cut-off (clamped to the corpus), whatever
    retrieve.top_k is."""
    src = read_beir(tiny_beir, ["test"])
    run = read_trec_run(pipeline.path(run_file))
    assert run.keys() == src.qrels["test"].keys()
    cuts = EvaluateConfig()
    depth = (
        min(max(cuts.ndcg_k, cuts.recall_k, cuts.mrr_k, cuts.map_k), len(src.corpus))
        if "baseline" in run_file
        else TOP_K
    )
    for docs in run.values():
        assert len(docs) == depth
        assert set(docs) <= src.corpus.keys()
    if "rerank" in run_file:
        assert all(0.0 <= s <= 1.0 for docs in run.values() for s in docs.values())


def test_rerank_keeps_the_retrieved_candidates(pipeline: StageWorkspace) -> None:
    """The reranked run rescored exactly the retrieved docs of each query."""
    retrieved = read_trec_run(pipeline.path("data/runs/retrieve.trec"))
    reranked = read_trec_run(pipeline.path("data/runs/rerank.trec"))
    assert {q: set(d) for q, d in reranked.items()} == {q: set(d) for q, d in retrieved.items()}


def test_eval_metrics(pipeline: StageWorkspace, tiny_beir: Path) -> None:
    """metrics/eval.json holds the four metrics of both runs, each in [0, 1]; per-query too."""
    metrics = _json(pipeline, "metrics/eval.json")
    assert set(metrics) == {"retrieve", "rerank"}
    for values in metrics.values():
        assert set(values) == METRICS
        assert all(0.0 <= v <= 1.0 for v in values.values())
    per_query = _json(pipeline, "data/eval/per_query.json")
    test_qids = set(read_beir(tiny_beir, ["test"]).qrels["test"])
    for run in ("retrieve", "rerank"):
        assert set(per_query[run]) == test_qids
        mean = sum(q["ndcg_at_10"] for q in per_query[run].values()) / len(test_qids)
        assert metrics[run]["ndcg_at_10"] == pytest.approx(mean, abs=1e-6)


def test_plot_data(pipeline: StageWorkspace) -> None:
    """The DVC plots: train's loss and dev curves are those of metrics/train.json, and the
    per-query delta holds every test query once, best gain first, each its final run's
    NDCG@10 minus the zero-shot run's."""
    history = _json(pipeline, "metrics/train.json")
    assert _json(pipeline, "plots/train_loss.json") == history["loss_curve"]
    assert _json(pipeline, "plots/dev_curve.json") == history["dev_curve"]

    points = _json(pipeline, "plots/per_query_delta.json")
    per_query = _json(pipeline, "data/eval/per_query.json")["rerank"]
    assert sorted(p["query"] for p in points) == sorted(per_query)
    assert [p["rank"] for p in points] == list(range(1, len(points) + 1))
    deltas = [p["delta"] for p in points]
    assert deltas == sorted(deltas, reverse=True)
    for p in points:
        assert p["value"] == per_query[p["query"]]["ndcg_at_10"]
        assert p["delta"] == pytest.approx(p["value"] - p["zero_shot"], abs=2e-6)
    # The zero-shot side is the baseline run's own per-query score.
    from irtune.beir import find_file, read_qrels
    from irtune.evaluate import evaluate_run

    qrels = read_qrels(find_file(pipeline.path("data/raw/${dataset.name}") / "qrels", "test.tsv"))
    baseline = read_trec_run(pipeline.path("data/runs/baseline.trec"))
    _, zero_shot = evaluate_run(qrels, baseline, EvaluateConfig())
    assert {p["query"]: p["zero_shot"] for p in points} == {
        q: v["ndcg_at_10"] for q, v in zero_shot.items()
    }


def test_significance(pipeline: StageWorkspace) -> None:
    """metrics/significance.json compares both runs with the zero-shot baseline per metric,
    and the reranked run with the first stage it reranked; 'value' and 'baseline' agree with
    eval.json and the baseline run's own score."""
    from irtune.beir import find_file, read_qrels
    from irtune.evaluate import evaluate_run

    sig = _json(pipeline, "metrics/significance.json")
    metrics = _json(pipeline, "metrics/eval.json")
    ev = pipeline.params["evaluate"]
    method = {"alpha", "test", "permutations", "correction", "confidence"}
    method |= {"bootstrap_resamples", "resample_seed"}
    assert set(sig) == {"baseline", "retrieve", "rerank", "rerank_vs_first_stage"} | method
    assert (sig["alpha"], sig["test"], sig["correction"]) == (ev["alpha"], ev["test"], "none")
    qrels = read_qrels(find_file(pipeline.path("data/raw/${dataset.name}") / "qrels", "test.tsv"))
    base_means, _ = evaluate_run(
        qrels, read_trec_run(pipeline.path("data/runs/baseline.trec")), EvaluateConfig()
    )
    for run in ("retrieve", "rerank"):
        assert set(sig[run]) == METRICS
        for metric, result in sig[run].items():
            assert result["verdict"] in ("better", "worse", "no significant difference")
            assert (result["test"], result["correction"]) == ("permutation", "none")
            assert 0.0 <= result["p_value"] <= 1.0
            assert result["ci_low"] <= result["delta"] <= result["ci_high"]
            assert result["value"] == pytest.approx(metrics[run][metric], abs=1e-6)
            assert result["baseline"] == pytest.approx(base_means[metric], abs=1e-6)
            assert result["delta"] == pytest.approx(result["value"] - result["baseline"], abs=2e-6)
    # Reranking against its own first stage: the same statistics, the retrieve run as baseline.
    assert set(sig["rerank_vs_first_stage"]) == METRICS
    for metric, result in sig["rerank_vs_first_stage"].items():
        assert result["value"] == pytest.approx(metrics["rerank"][metric], abs=1e-6)
        assert result["baseline"] == pytest.approx(metrics["retrieve"][metric], abs=1e-6)
        assert result["ci_low"] <= result["delta"] <= result["ci_high"]
        assert result["verdict"] in ("better", "worse", "no significant difference")


def test_mlflow_run(pipeline: StageWorkspace, tiny_bi_encoder: Path) -> None:
    """The store holds one run with every param, the eval metrics, a train_loss history
    with several steps, and the dataset/base_model tags; it matches the on-disk record."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pipeline.params["tracking"]["uri"])
    experiment = client.get_experiment_by_name(pipeline.params["tracking"]["experiment"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"

    assert run.data.params["train.batch_size"] == "8"
    assert run.data.params["retrieve.top_k"] == str(TOP_K)
    assert run.data.params["dataset.name"] == "tiny"
    assert len(run.data.params) == sum(len(v) for v in pipeline.params.values())

    metrics = _json(pipeline, "metrics/eval.json")
    for stage_name, values in metrics.items():
        for name, value in values.items():
            assert run.data.metrics[f"{stage_name}.{name}"] == pytest.approx(value)

    history = client.get_metric_history(run.info.run_id, "train_loss")
    steps = [m.step for m in history]
    assert len(set(steps)) >= 2
    assert all(math.isfinite(m.value) for m in history)
    train_json = _json(pipeline, "metrics/train.json")
    assert sorted(steps) == [p["step"] for p in train_json["loss_curve"]]
    assert len(client.get_metric_history(run.info.run_id, "dev_ndcg_at_10")) == 1

    assert run.data.tags["dataset"] == "tiny"
    assert run.data.tags["base_model"] == str(tiny_bi_encoder)
    assert run.data.tags["loss"] == "mnrl"

    sig = _json(pipeline, "metrics/significance.json")
    assert run.data.tags["verdict.retrieve.ndcg_at_10"] == sig["retrieve"]["ndcg_at_10"]["verdict"]

    record = _json(pipeline, "data/eval/mlflow_record.json")
    assert run.data.tags["irtune.run_key"] == record["run_key"]
    assert record["params"] == run.data.params
