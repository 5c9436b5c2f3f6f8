"""Hybrid retrieval: fuse a dense and a BM25 run, with the fusion parameter chosen on dev.

``wsum`` is a weighted sum of min-max normalised scores (the dense weight is chosen);
``rrf`` is reciprocal rank fusion (its ``k`` is chosen). :func:`choose_fusion` picks the
parameter by dev NDCG, and only then is it applied to the test run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from irtune.beir import Qrels
from irtune.evaluate import mean_ndcg
from irtune.runs import Run, best, ranked

log = logging.getLogger(__name__)

#: What a hybrid fuses with when there is no dev split to choose on: equal weights for
#: ``wsum``, and RRF's customary k of 60 (Cormack et al., 2009).
FALLBACK_FUSION: dict[str, tuple[str, float]] = {
    "wsum": ("dense_weight", 0.5),
    "rrf": ("rrf_k", 60),
}


def min_max(ranking: dict[str, float], floor: float | None = None) -> dict[str, float]:
    """Scale one query's scores to 0..1, best 1, worst (or ``floor``, if lower) 0.

    All-equal scores map to 1: each is the run's best, and mapping them to 0 would silently
    drop that run from a weighted sum.

    Args:
        ranking: Doc id -> score.
        floor: A score at or below every listed one: what the unlisted docs score.
    """
    if not ranking:
        return {}
    low, high = min(ranking.values()), max(ranking.values())
    if floor is not None:
        low = min(low, floor)
    if high == low:
        return dict.fromkeys(ranking, 1.0)
    return {doc: (s - low) / (high - low) for doc, s in ranking.items()}


def fuse_wsum(dense: Run, sparse: Run, dense_weight: float, top_k: int) -> Run:
    """Weighted sum of min-max normalised scores, per query, cut to ``top_k``.

    A document missing from one run scores 0 there, the same as that run's worst document.
    A BM25 ranking shorter than ``top_k`` holds every matching document, so the rest of its
    top ``k`` would score 0: it is normalised from 0, not from its last hit, which would
    otherwise count as no match at all (on NFCorpus dev this is worth +0.003 NDCG@10).

    Args:
        dense: The dense run.
        sparse: The BM25 run.
        dense_weight: The dense run's weight ``w``; the BM25 run's is ``1 - w``.
        top_k: Documents kept per query; also the depth both runs were retrieved at.

    Returns:
        The fused run, over the union of both runs' queries.
    """
    fused: Run = {}
    for qid in sorted(dense.keys() | sparse.keys()):
        hits = sparse.get(qid, {})
        d = min_max(dense.get(qid, {}))
        s = min_max(hits, floor=0.0 if len(hits) < top_k else None)
        scores = {
            doc: dense_weight * d.get(doc, 0.0) + (1 - dense_weight) * s.get(doc, 0.0)
            for doc in d.keys() | s.keys()
        }
        fused[qid] = best(scores, top_k)
    return fused


def fuse_rrf(runs: list[Run], k: int, top_k: int) -> Run:
    """Reciprocal rank fusion (Cormack et al., 2009): ``sum over runs of 1 / (k + rank)``.

    Ranks start at 1 and follow :func:`irtune.runs.ranked`'s order (score, then doc
    id); a document a run did not retrieve adds nothing from it.

    Args:
        runs: The runs to fuse.
        k: RRF's constant: larger values flatten the gap between top and lower ranks.
        top_k: Documents kept per query.

    Returns:
        The fused run, over the union of the runs' queries.
    """
    fused: Run = {}
    for qid in sorted(set().union(*(run.keys() for run in runs))):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, (doc, _) in enumerate(ranked(run.get(qid, {})), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[qid] = best(scores, top_k)
    return fused


def fuse(dense: Run, sparse: Run, method: str, param: float, top_k: int) -> Run:
    """Fuse with ``wsum`` (``param`` = dense weight) or ``rrf`` (``param`` = k)."""
    if method == "wsum":
        return fuse_wsum(dense, sparse, float(param), top_k)
    if method == "rrf":
        return fuse_rrf([dense, sparse], int(param), top_k)
    raise ValueError(f"unknown fusion method {method!r}")


@dataclass
class FusionChoice:
    """The fusion parameter chosen on the dev split, and the dev figures behind the choice."""

    method: str
    #: ``dense_weight`` (wsum) or ``rrf_k`` (rrf).
    param_name: str
    param: float
    #: The metric the choice maximised, e.g. ``ndcg_at_10``.
    metric: str
    #: Dev value of the metric for the dense run, the BM25 run and the chosen fusion.
    dev: dict[str, float]
    #: Dev value of the metric for every grid value, in grid order.
    grid: dict[str, float]


def choose_fusion(
    dense_dev: Run,
    sparse_dev: Run,
    dev_qrels: Qrels,
    method: str,
    grid: list[float],
    top_k: int,
    ndcg_k: int,
) -> FusionChoice:
    """Pick the grid value whose fusion of the dev runs scores the best dev NDCG@``ndcg_k``.

    Ties go to the first value in grid order, so the choice is deterministic.

    Args:
        dense_dev: The dense run of the dev queries.
        sparse_dev: The BM25 run of the dev queries.
        dev_qrels: The dev judgements; never the test ones.
        method: ``wsum`` or ``rrf``.
        grid: Dense weights (wsum) or k values (rrf) to try.
        top_k: Documents per query of each fused run.
        ndcg_k: The cut-off of the NDCG that is maximised.

    Returns:
        The choice.

    Raises:
        ValueError: If ``grid`` is empty.
    """
    if not grid:
        raise ValueError("the fusion grid is empty")
    metric = f"ndcg_at_{ndcg_k}"

    def score(run: Run) -> float:
        return mean_ndcg(dev_qrels, run, ndcg_k)

    scores = {
        str(value): score(fuse(dense_dev, sparse_dev, method, value, top_k)) for value in grid
    }
    best = max(range(len(grid)), key=lambda i: (scores[str(grid[i])], -i))
    choice = FusionChoice(
        method=method,
        param_name="dense_weight" if method == "wsum" else "rrf_k",
        param=grid[best],
        metric=metric,
        dev={
            "dense": score(dense_dev),
            "bm25": score(sparse_dev),
            "fused": scores[str(grid[best])],
        },
        grid=scores,
    )
    log.info(
        "Fusion %s: %s=%s chosen on dev (%s %.4f; dense %.4f, bm25 %.4f)",
        method,
        choice.param_name,
        choice.param,
        metric,
        choice.dev["fused"],
        choice.dev["dense"],
        choice.dev["bm25"],
    )
    return choice
