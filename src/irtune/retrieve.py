"""Retrieval: dense search of the Faiss index, and fusion of a dense and a BM25 run.

``retrieve.mode`` picks ``dense``, ``bm25`` (:mod:`irtune.bm25`) or ``hybrid``: both runs
fused, with the fusion parameter chosen on the dev split (:func:`choose_fusion`) and only
then applied to the test run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irtune.beir import Corpus, Qrels, Queries
from irtune.config import EvaluateConfig
from irtune.errors import DataError
from irtune.io import Run

log = logging.getLogger(__name__)


def encode_queries(model, queries: Queries, batch_size: int) -> np.ndarray:
    """Normalised float32 embeddings of ``queries``' texts, in their order."""
    log.info("Encoding %d queries", len(queries))
    return model.encode(
        list(queries.values()),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)


def search(index, doc_ids: list[str], qids: list[str], emb: np.ndarray, top_k: int) -> Run:
    """The ``top_k`` documents of each query embedding (row ``i`` is query ``qids[i]``).

    A ``top_k`` larger than the corpus is clamped to the corpus size, with a warning: every
    document is then retrieved, which is what such a request can only mean.

    Raises:
        DataError: If the embeddings' size differs from the index's.
    """
    if emb.shape[1] != index.d:
        raise DataError(
            f"the model embeds in {emb.shape[1]} dimensions but the index holds {index.d}: "
            "was the index built with another model?"
        )
    if top_k > index.ntotal:
        log.warning("retrieve.top_k=%d exceeds the corpus (%d docs); clamping", top_k, index.ntotal)
        top_k = index.ntotal
    scores, rows = index.search(emb, top_k)
    run: Run = {}
    for qid, q_scores, q_rows in zip(qids, scores, rows, strict=True):
        # Faiss pads with -1 when an approximate index finds fewer than top_k hits.
        run[qid] = {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True) if r >= 0}
    return run


def dense_search(
    model, index, doc_ids: list[str], queries: Queries, top_k: int, batch_size: int
) -> Run:
    """Encode ``queries`` and retrieve the ``top_k`` nearest documents of each (:func:`search`).

    Raises:
        DataError: If the model's embedding size differs from the index's.
    """
    return search(index, doc_ids, list(queries), encode_queries(model, queries, batch_size), top_k)


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
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        rows[i, : len(ranked)] = [row_of[doc] for doc, _ in ranked]
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
    eval_cfg: EvaluateConfig,
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
        eval_cfg: Metric cut-offs; NDCG at ``eval_cfg.ndcg_k`` is maximised.
        first_pass: The dev run whose top documents are the feedback (a hybrid's fused
            run); None: the dense search's own.
        combine: What turns the dense dev run into the run that is scored (a hybrid's
            fusion with BM25); None scores the dense run itself.

    Raises:
        ValueError: If ``grid`` is empty.
    """
    from irtune.evaluate import evaluate_run

    if not grid:
        raise ValueError("the feedback grid is empty")
    metric = f"ndcg_at_{eval_cfg.ndcg_k}"
    depth = max(k for k, _ in grid)
    rows = None if first_pass is None else feedback_rows(first_pass, dev_qids, doc_ids, depth)

    def score(k: int, beta: float) -> float:
        run = search(index, doc_ids, dev_qids, rocchio(index, dev_emb, k, beta, rows), top_k)
        return evaluate_run(dev_qrels, combine(run) if combine else run, eval_cfg)[0][metric]

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


def exact_search(
    model,
    corpus: Corpus,
    queries: Queries,
    top_k: int,
    encode_batch_size: int,
    query_batch_size: int,
) -> Run:
    """Encode ``corpus`` with ``model`` and search it exactly (a flat index) for ``queries``.

    The zero-shot baseline and the base model's candidates for cross-encoder labels both
    need this one-off search, without the pipeline's stored index.
    """
    from irtune.config import IndexConfig
    from irtune.encode import encode_corpus
    from irtune.index import build_index

    index = build_index(encode_corpus(model, corpus, encode_batch_size), IndexConfig(type="flat"))
    return dense_search(model, index, list(corpus), queries, top_k, query_batch_size)


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


def _cut(scores: dict[str, float], top_k: int) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])


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
        fused[qid] = _cut(scores, top_k)
    return fused


def fuse_rrf(runs: list[Run], k: int, top_k: int) -> Run:
    """Reciprocal rank fusion (Cormack et al., 2009): ``sum over runs of 1 / (k + rank)``.

    Ranks start at 1 and follow :func:`irtune.io.write_trec_run`'s order (score, then doc
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
            ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (doc, _) in enumerate(ranked, start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[qid] = _cut(scores, top_k)
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
    eval_cfg: EvaluateConfig,
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
        eval_cfg: Metric cut-offs; NDCG at ``eval_cfg.ndcg_k`` is maximised.

    Returns:
        The choice.

    Raises:
        ValueError: If ``grid`` is empty.
    """
    from irtune.evaluate import evaluate_run

    if not grid:
        raise ValueError("the fusion grid is empty")
    metric = f"ndcg_at_{eval_cfg.ndcg_k}"

    def score(run: Run) -> float:
        return evaluate_run(dev_qrels, run, eval_cfg)[0][metric]

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
