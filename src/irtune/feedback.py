"""Dense pseudo-relevance feedback (Rocchio in embedding space), chosen on the dev split.

Each query vector moves toward the mean of its first pass's top ``k`` documents and searches
again. ``(k, beta)`` is chosen from a grid by dev NDCG (:func:`choose_prf`); ``k = 0`` in the
grid lets dev turn feedback off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irtune.beir import Qrels
from irtune.dense import search
from irtune.evaluate import mean_ndcg
from irtune.runs import Run, ranked

log = logging.getLogger(__name__)


def feedback_rows(run: Run, qids: list[str], doc_ids: list[str], k: int) -> np.ndarray:
    """Index rows of each query's top ``k`` documents in ``run``, best first.

    This is how a first pass other than the dense search itself (a hybrid's fused run)
    names the feedback documents to :func:`rocchio`.

    Returns:
        An int64 array of shape ``(len(qids), k)``; -1 where a query has fewer than ``k``.
    """
    row_of = {doc: i for i, doc in enumerate(doc_ids)}
    rows = np.full((len(qids), k), -1, dtype=np.int64)
    for i, qid in enumerate(qids):
        top = ranked(run.get(qid, {}))[:k]
        rows[i, : len(top)] = [row_of[doc] for doc, _ in top]
    return rows


def rocchio(
    index, emb: np.ndarray, k: int, beta: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """Dense pseudo-relevance feedback: move each query toward its top ``k`` documents.

    Rocchio's update in embedding space, as in Li et al. (2022), "Improving query
    representations for dense retrieval with pseudo relevance feedback":
    ``q' = q + beta * mean(top k document vectors)``, normalised again. On NFCorpus, where a
    query has dozens of relevant documents that resemble each other, the first few hits
    describe the topic better than a three-word query does.

    Args:
        index: The Faiss index; its stored vectors are the feedback documents.
        emb: Normalised query embeddings, one row per query.
        k: Feedback documents per query; 0 returns ``emb`` unchanged.
        beta: Weight of the feedback documents' mean.
        rows: The first pass's top documents as index rows (:func:`feedback_rows`), at
            least ``k`` columns; None searches ``index`` with ``emb`` for them.

    Returns:
        The new, normalised query embeddings.
    """
    import faiss

    if k == 0:
        return emb
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()  # an IVF index can only hand back its vectors through this map
    rows = index.search(emb, k)[1] if rows is None else rows[:, :k]
    found = rows >= 0  # an approximate index, or a short first pass, may give fewer than k
    vectors = index.reconstruct_batch(np.where(found, rows, 0).ravel()).reshape(*rows.shape, -1)
    counts = np.maximum(found.sum(axis=1, keepdims=True), 1)
    centroid = (vectors * found[..., None]).sum(axis=1) / counts
    moved = emb + beta * centroid
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class PrfChoice:
    """The pseudo-relevance feedback chosen on the dev split, and the dev figures behind it."""

    k: int
    beta: float
    #: The metric the choice maximised, e.g. ``ndcg_at_10``.
    metric: str
    #: Dev value of the metric for every grid point (``"k=3,beta=0.5"``; ``"k=0"`` = none).
    grid: dict[str, float]


def prf_grid(ks: list[int], betas: list[float]) -> list[tuple[int, float]]:
    """Grid points ``(k, beta)`` in order; ``k = 0`` (no feedback) appears once, beta 0."""
    points: list[tuple[int, float]] = []
    for k in dict.fromkeys(ks):
        points += [(0, 0.0)] if k == 0 else [(k, beta) for beta in dict.fromkeys(betas)]
    return points


def _grid_key(k: int, beta: float) -> str:
    return "k=0" if k == 0 else f"k={k},beta={beta:g}"


def choose_prf(
    index,
    doc_ids: list[str],
    dev_qids: list[str],
    dev_emb: np.ndarray,
    dev_qrels: Qrels,
    grid: list[tuple[int, float]],
    top_k: int,
    ndcg_k: int,
    first_pass: Run | None = None,
    combine: Callable[[Run], Run] | None = None,
) -> PrfChoice:
    """Pick the feedback ``(k, beta)`` whose dev run scores the best dev NDCG.

    Ties go to the first grid point, so listing ``k = 0`` first prefers no feedback.

    Args:
        index: The Faiss index.
        doc_ids: The index's doc ids.
        dev_qids: The dev queries, in ``dev_emb``'s row order.
        dev_emb: Their normalised embeddings.
        dev_qrels: The dev judgements; never the test ones.
        grid: ``(k, beta)`` points, e.g. from :func:`prf_grid`.
        top_k: Documents per query of each dev run.
        ndcg_k: The cut-off of the NDCG that is maximised.
        first_pass: The dev run whose top documents are the feedback (a hybrid's fused
            run); None: the dense search's own.
        combine: What turns the dense dev run into the run that is scored (a hybrid's
            fusion with BM25); None scores the dense run itself.

    Raises:
        ValueError: If ``grid`` is empty.
    """
    if not grid:
        raise ValueError("the feedback grid is empty")
    metric = f"ndcg_at_{ndcg_k}"
    depth = max(k for k, _ in grid)
    rows = None if first_pass is None else feedback_rows(first_pass, dev_qids, doc_ids, depth)

    def score(k: int, beta: float) -> float:
        run = search(index, doc_ids, dev_qids, rocchio(index, dev_emb, k, beta, rows), top_k)
        return mean_ndcg(dev_qrels, combine(run) if combine else run, ndcg_k)

    scores = {_grid_key(k, beta): score(k, beta) for k, beta in grid}
    best = max(range(len(grid)), key=lambda i: (scores[_grid_key(*grid[i])], -i))
    k, beta = grid[best]
    log.info(
        "Dense feedback %s (from the %s run) chosen on dev (%s %.4f; without feedback %s)",
        _grid_key(k, beta),
        "dense" if first_pass is None else "first-pass",
        metric,
        scores[_grid_key(k, beta)],
        f"{scores['k=0']:.4f}" if "k=0" in scores else "not in the grid",
    )
    return PrfChoice(k=k, beta=beta, metric=metric, grid=scores)
