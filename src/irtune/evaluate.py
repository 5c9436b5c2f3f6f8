"""IR metrics with trec_eval semantics (pytrec_eval): graded NDCG, recall, MRR, MAP; and
the per-query comparison of a run with a baseline."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from irtune.beir import Qrels
from irtune.config import Config, EvaluateConfig
from irtune.runs import Run, cut

log = logging.getLogger(__name__)


def evaluate_run(qrels: Qrels, run: Run, cfg: EvaluateConfig) -> tuple[dict[str, float], dict]:
    """Score ``run`` against graded ``qrels``.

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
    import pytrec_eval

    names = {
        f"ndcg_cut_{cfg.ndcg_k}": f"ndcg_at_{cfg.ndcg_k}",
        f"recall_{cfg.recall_k}": f"recall_at_{cfg.recall_k}",
        f"map_cut_{cfg.map_k}": f"map_at_{cfg.map_k}",
    }
    measures = {f"ndcg_cut.{cfg.ndcg_k}", f"recall.{cfg.recall_k}", f"map_cut.{cfg.map_k}"}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut(run, cfg.mrr_k))
    metric_names = [*names.values(), f"mrr_at_{cfg.mrr_k}"]
    per_query: dict[str, dict[str, float]] = {}
    for qid in sorted(qrels):
        if not any(g > 0 for g in qrels[qid].values()):
            continue  # a query with no relevant document has nothing to find
        values = {names[m]: v for m, v in full.get(qid, {}).items() if m in names}
        values[f"mrr_at_{cfg.mrr_k}"] = mrr.get(qid, {}).get("recip_rank", 0.0)
        per_query[qid] = {m: round(values.get(m, 0.0), 6) for m in metric_names}
    means = {
        m: round(sum(q[m] for q in per_query.values()) / len(per_query), 6) for m in metric_names
    }
    return means, per_query


def compare(
    per_query: dict[str, dict[str, float]],
    baseline: dict[str, dict[str, float]],
    alpha: float,
) -> dict[str, dict[str, float | str]]:
    """Compare a run with a baseline per query: a paired two-sided t-test for each metric.

    Both must hold the same queries (evaluate_run scores every judged query, so they do).

    Args:
        per_query: The run's per-query metrics.
        baseline: The baseline's per-query metrics.
        alpha: Significance level of the verdict.

    Returns:
        metric -> ``{"value", "baseline", "delta", "p_value", "verdict"}``, where verdict is
        ``better``, ``worse`` or ``no significant difference``.
    """
    from scipy.stats import ttest_rel

    qids = sorted(per_query)
    if qids != sorted(baseline):
        raise ValueError("the run and the baseline were scored on different queries")
    out: dict[str, dict[str, float | str]] = {}
    for metric in per_query[qids[0]]:
        ours = [per_query[q][metric] for q in qids]
        theirs = [baseline[q][metric] for q in qids]
        delta = sum(ours) / len(qids) - sum(theirs) / len(qids)
        # Identical per-query values: no difference at all (the t statistic is undefined).
        p = 1.0 if ours == theirs else float(ttest_rel(ours, theirs).pvalue)
        verdict = "no significant difference"
        if p < alpha:
            verdict = "better" if delta > 0 else "worse"
        out[metric] = {
            "value": round(sum(ours) / len(qids), 6),
            "baseline": round(sum(theirs) / len(qids), 6),
            "delta": round(delta, 6),
            "p_value": round(p, 6),
            "verdict": verdict,
        }
    return out


@dataclass
class Evaluation:
    """What the evaluate stage reports of the pipeline's runs."""

    #: run name -> metric -> mean over the judged test queries (``metrics/eval.json``).
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: run name -> query id -> metric -> value.
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: Each run against the zero-shot baseline (``metrics/significance.json``); empty
    #: without one.
    significance: dict[str, Any] = field(default_factory=dict)


def evaluate_runs(
    qrels: Qrels, runs: dict[str, Run], baseline: Run | None, cfg: Config
) -> Evaluation:
    """Score every run on ``qrels`` and compare each with the zero-shot ``baseline``.

    A significant regression is logged as a warning, as loudly as a gain is reported.

    Args:
        qrels: The test judgements.
        runs: The runs by name (``retrieve``, ``rerank``).
        baseline: The zero-shot run; None skips the comparison.
        cfg: The config (``evaluate`` cut-offs and alpha; ``model.base`` names the baseline).
    """
    out = Evaluation()
    for name, run in runs.items():
        out.metrics[name], out.per_query[name] = evaluate_run(qrels, run, cfg.evaluate)
    if baseline is None:
        return out
    alpha = cfg.evaluate.alpha
    _, zero_shot = evaluate_run(qrels, baseline, cfg.evaluate)
    out.significance = {"baseline": f"zero-shot {cfg.model.base}", "alpha": alpha}
    for name in runs:
        out.significance[name] = compare(out.per_query[name], zero_shot, alpha)
        for metric, result in out.significance[name].items():
            if result["verdict"] != "no significant difference":
                log.log(
                    logging.WARNING if result["verdict"] == "worse" else logging.INFO,
                    "%s %s is significantly %s than zero-shot: %.4f vs %.4f (p=%.4g)",
                    name,
                    metric,
                    result["verdict"],
                    result["value"],
                    result["baseline"],
                    result["p_value"],
                )
    return out
