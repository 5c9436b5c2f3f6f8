"""The data behind DVC's plots: one JSON list of points a plot, as ``dvc plots`` reads it.

``dvc.yaml`` declares each file as a plot of the stage that writes it (its x and y fields,
the ``linear`` template), so ``dvc plots show`` draws an experiment's curves and
``dvc plots diff <exp-a> <exp-b>`` lays two experiments' curves over each other. The train
stage writes its loss curve and per-epoch dev curve (the lists of
:class:`irtune.train.TrainResult`); the evaluate stage writes :func:`per_query_delta`.
"""

from __future__ import annotations

from irtune.beir import Qrels
from irtune.config import EvaluateConfig
from irtune.evaluate import evaluate_run
from irtune.runs import Run

#: The run whose per-query delta is plotted: the pipeline's final run (the retrieval run
#: itself when reranking is off).
FINAL_RUN = "rerank"


def per_query_delta(
    qrels: Qrels,
    per_query: dict[str, dict[str, float]],
    baseline: Run | None,
    cfg: EvaluateConfig,
) -> list[dict[str, float | int | str]]:
    """Each test query's NDCG@k minus the zero-shot model's, best gain first.

    Sorted, the points form a curve an experiment can be compared by: the area above zero
    is the queries it helps, the area below those it hurts, and two experiments' curves lie
    on the same ``rank`` axis. Ties are ordered by query id, so identical runs write
    identical files.

    Args:
        qrels: The test judgements.
        per_query: The run's per-query metrics (the evaluate stage's ``--per-query`` output
            for one run).
        baseline: The zero-shot run; None (``evaluate.baseline`` off) gives no points.
        cfg: The cut-offs: the metric is ``ndcg_at_<cfg.ndcg_k>``.

    Returns:
        ``{"rank", "query", "delta", "value", "zero_shot"}`` per query, rank from 1.
    """
    if baseline is None:
        return []
    metric = f"ndcg_at_{cfg.ndcg_k}"
    _, zero_shot = evaluate_run(qrels, baseline, cfg)
    deltas = [
        (round(values[metric] - zero_shot[qid][metric], 6), qid, values[metric])
        for qid, values in per_query.items()
    ]
    deltas.sort(key=lambda d: (-d[0], d[1]))
    return [
        {
            "rank": rank,
            "query": qid,
            "delta": delta,
            "value": value,
            "zero_shot": zero_shot[qid][metric],
        }
        for rank, (delta, qid, value) in enumerate(deltas, start=1)
    ]
