"""IR metrics with trec_eval semantics (pytrec_eval): graded NDCG, recall, MRR, MAP; and
the per-query comparison of a run with a baseline (the statistics: :mod:`irtune.significance`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from irtune.beir import Qrels
from irtune.config import Config, EvaluateConfig
from irtune.runs import Run, cut

log = logging.getLogger(__name__)

#: The zero-shot baseline's per-query scores, beside the runs' in ``per_query.json``.
ZERO_SHOT = "zero_shot"
#: ``metrics/significance.json``'s entry for the reranked run tested against the first stage
#: it reranked (when ``rerank.top_k`` > 0): whether reranking earned its cost.
RERANK_VS_FIRST_STAGE = "rerank_vs_first_stage"


def evaluate_run(qrels: Qrels, run: Run, cfg: EvaluateConfig) -> tuple[dict[str, float], dict]:
    """Score ``run`` against graded ``qrels``: NDCG, recall, MAP and MRR at ``cfg``'s cut-offs.

    MRR@k is trec_eval's ``recip_rank`` over the run cut to its top k (trec_eval has no cut
    for it). Queries the run does not answer count as zero, as trec_eval's ``-c`` does, so a
    run cannot look better by skipping hard queries.

    Args:
        qrels: Graded judgements of the evaluated split.
        run: Scores per query.
        cfg: The cut-offs.

    Returns:
        ``(means, per_query)``: metric name -> mean over judged queries, and
        query id -> metric name -> value. Names carry no '@': ``ndcg_at_10``.
    """
    return _scores(qrels, run, cfg.ndcg_k, cfg.recall_k, cfg.map_k, cfg.mrr_k)


def mean_ndcg(qrels: Qrels, run: Run, k: int) -> float:
    """Mean NDCG@``k`` of ``run`` on ``qrels``, exactly as :func:`evaluate_run` reports it:
    what a parameter chosen on the dev split maximises."""
    return _scores(qrels, run, ndcg_k=k)[0][f"ndcg_at_{k}"]


def _scores(
    qrels: Qrels,
    run: Run,
    ndcg_k: int,
    recall_k: int | None = None,
    map_k: int | None = None,
    mrr_k: int | None = None,
) -> tuple[dict[str, float], dict]:
    import pytrec_eval

    # (trec_eval measure, cut-off, irtune's name): pytrec_eval reports "ndcg_cut_10".
    wanted = [("ndcg_cut", ndcg_k, "ndcg_at"), ("recall", recall_k, "recall_at")]
    wanted += [("map_cut", map_k, "map_at")]
    wanted = [(measure, k, ours) for measure, k, ours in wanted if k is not None]
    names = {f"{measure}_{k}": f"{ours}_{k}" for measure, k, ours in wanted}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"{m}.{k}" for m, k, _ in wanted})
    full = evaluator.evaluate(run)
    metric_names = list(names.values())
    mrr = {}
    if mrr_k is not None:
        mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut(run, mrr_k))
        metric_names.append(f"mrr_at_{mrr_k}")
    per_query: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        if not any(g > 0 for g in qrels[qid].values()):
            continue  # a query with no relevant document has nothing to find
        values = {names[m]: v for m, v in full.get(qid, {}).items() if m in names}
        if mrr_k is not None:
            values[f"mrr_at_{mrr_k}"] = mrr.get(qid, {}).get("recip_rank", 0.0)
        per_query[qid] = {m: round(values.get(m, 0.0), 6) for m in metric_names}
    means = {
        m: round(sum(q[m] for q in per_query.values()) / len(per_query), 6) for m in metric_names
    }
    return means, per_query


def compare(
    per_query: dict[str, dict[str, float]],
    baseline: dict[str, dict[str, float]],
    alpha: float,
    cfg: EvaluateConfig | None = None,
) -> dict[str, dict[str, float | str]]:
    """Compare one run with a baseline per query, for each metric: ``cfg.test`` (the paired
    randomization test by default), a bootstrap 95% CI of the delta, and a verdict at
    ``alpha`` (see :mod:`irtune.significance`; one comparison per metric: no correction).

    Both must hold the same queries (evaluate_run scores every judged query, so they do).

    Args:
        per_query: The run's per-query metrics.
        baseline: The baseline's per-query metrics.
        alpha: Significance level of the verdict.
        cfg: The test, its resamples and seed; None: the schema's defaults.

    Returns:
        metric -> ``{"value", "baseline", "delta", "ci_low", "ci_high", "p_value", "test",
        "correction", "verdict"}``, where verdict is ``better``, ``worse`` or ``no
        significant difference``.

    Raises:
        ValueError: If the two were scored on different queries.
    """
    from irtune.significance import compare_replicates

    return compare_replicates([per_query], [baseline], alpha, cfg, seeds=False)


@dataclass
class Evaluation:
    """What the evaluate stage reports of the pipeline's runs."""

    #: run name -> metric -> mean over the judged test queries (``metrics/eval.json``).
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: run name -> query id -> metric -> value.
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: Each run against the zero-shot baseline (``metrics/significance.json``): how it
    #: was tested (``alpha``, ``test``, ``correction``...), then run -> metric -> result;
    #: empty without a baseline. ``per_query`` then holds the baseline's as ``zero_shot``.
    significance: dict[str, Any] = field(default_factory=dict)


def evaluate_runs(
    qrels: Qrels, runs: dict[str, Run], baseline: Run | None, cfg: Config
) -> Evaluation:
    """Score every run on ``qrels`` and compare each with the zero-shot ``baseline``; and
    the reranked run with the first stage it reranked.

    A significant regression is logged as a warning, as loudly as a gain is reported. The
    baseline's per-query scores are kept (``per_query["zero_shot"]``), so a sweep's report
    can test a recipe's seeds against zero-shot together.

    Args:
        qrels: The test judgements.
        runs: The runs by name (``retrieve``, ``rerank``).
        baseline: The zero-shot run; None skips that comparison.
        cfg: The config (``evaluate`` cut-offs, test and alpha; ``model.base`` names the
            baseline; ``rerank.top_k`` > 0 adds :data:`RERANK_VS_FIRST_STAGE`).
    """
    from irtune.significance import method

    out = Evaluation()
    for name, run in runs.items():
        out.metrics[name], out.per_query[name] = evaluate_run(qrels, run, cfg.evaluate)
    alpha = cfg.evaluate.alpha
    if baseline is not None:
        _, zero_shot = evaluate_run(qrels, baseline, cfg.evaluate)
        out.per_query[ZERO_SHOT] = zero_shot
        out.significance = {"baseline": f"zero-shot {cfg.model.base}"} | method(cfg.evaluate)
        for name in runs:
            out.significance[name] = compare(out.per_query[name], zero_shot, alpha, cfg.evaluate)
            _log_verdicts(name, "zero-shot", out.significance[name])
    if cfg.rerank.top_k > 0 and {"retrieve", "rerank"} <= runs.keys():
        out.significance = method(cfg.evaluate) | out.significance
        result = compare(out.per_query["rerank"], out.per_query["retrieve"], alpha, cfg.evaluate)
        out.significance[RERANK_VS_FIRST_STAGE] = result
        _log_verdicts("rerank", "its first stage (retrieve)", result)
    return out


def _log_verdicts(name: str, against: str, results: dict[str, dict[str, Any]]) -> None:
    """Log each significant difference: a regression as a warning, a gain as info."""
    for metric, result in results.items():
        if result["verdict"] == "no significant difference":
            continue
        log.log(
            logging.WARNING if result["verdict"] == "worse" else logging.INFO,
            "%s %s is significantly %s than %s: %.4f vs %.4f "
            "(delta %+.4f, 95%% CI %+.4f..%+.4f; %s p=%.4g)",
            name,
            metric,
            result["verdict"],
            against,
            result["value"],
            result["baseline"],
            result["delta"],
            result["ci_low"],
            result["ci_high"],
            result["test"],
            result["p_value"],
        )
