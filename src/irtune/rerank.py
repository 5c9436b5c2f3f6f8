"""Rerank retrieved candidates with a cross-encoder (at inference, never as a trainer).

The cross-encoder's sigmoid scores (0..1) are fused with the first stage's, as the retrieve
stage fuses dense and BM25: a weighted sum of per-query min-max normalised scores (``wsum``,
the cross-encoder's weight chosen) or reciprocal rank fusion (``rrf``, its ``k`` chosen).
The fusion value and the depth reranked are chosen together on the dev run, by dev
NDCG@``evaluate.ndcg_k``. Weight 1 is pure reranking and weight 0 the first stage's order,
so on dev reranking can no longer make the answer worse; only then is the choice applied to
the test run. Documents below the chosen depth keep the first stage's order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irtune.beir import BeirDataset, Corpus, Qrels, Queries, doc_text
from irtune.config import Config, RerankConfig
from irtune.evaluate import mean_ndcg
from irtune.fusion import FALLBACK_FUSION, fuse
from irtune.models import TRAINED, load_cross_encoder, trained_cross_encoder
from irtune.runs import Run, cut, ranked, subset

log = logging.getLogger(__name__)

#: The choice without a dev split: pure reranking of the top ``rerank.top_k`` (wsum), or
#: RRF's customary k.
FALLBACK = {"wsum": ("ce_weight", 1.0), "rrf": FALLBACK_FUSION["rrf"]}


@dataclass
class Reranking:
    """The reranked test run, and what was chosen on dev with the dev figures behind it."""

    run: Run
    #: ``top_k``, ``fusion``, ``depth``, ``ce_weight`` or ``rrf_k``, and the dev scores:
    #: ``metrics/rerank.json``.
    choices: dict[str, Any] = field(default_factory=dict)


def rerank(model, run: Run, queries: Queries, corpus: Corpus, top_k: int, batch_size: int) -> Run:
    """Score each query's ``top_k`` candidates with the cross-encoder, sigmoid-normalised to
    0..1.

    The run that comes back holds only the scored ``top_k`` documents per query.
    """
    import torch

    candidates = cut(run, top_k)
    pairs = [(qid, did) for qid, docs in candidates.items() for did in docs]
    log.info("Reranking %d (query, doc) pairs of %d queries", len(pairs), len(candidates))
    scores = model.predict(
        [(queries[qid], doc_text(corpus[did])) for qid, did in pairs],
        batch_size=batch_size,
        activation_fn=torch.nn.Sigmoid(),
        convert_to_numpy=True,
        show_progress_bar=True,
    )
    out: Run = {qid: {} for qid in candidates}
    for (qid, did), score in zip(pairs, scores, strict=True):
        out[qid][did] = float(score)
    return out


def depth_grid(depths: list[int], top_k: int) -> list[int]:
    """The depths tried on dev: those of ``depths`` below ``top_k``, and ``top_k``."""
    return sorted({d for d in depths if d < top_k} | {top_k})


def combine(first: Run, scores: Run, method: str, param: float, depth: int, top_k: int) -> Run:
    """The first stage's top ``depth`` reordered by fusing the cross-encoder's ``scores``
    with the first stage's, then its ranks ``depth + 1 .. top_k`` in their order below.

    Args:
        first: The first-stage run.
        scores: The cross-encoder's scores of (at least) each query's top ``depth``.
        method: ``wsum`` (``param`` is the cross-encoder's weight) or ``rrf`` (``param``
            is k).
        param: The fusion value.
        depth: How many of the first stage's documents are reordered.
        top_k: Documents per query in the result.

    Returns:
        Scores per query: the fused ones (0 and above) over the reordered head, negative
        ones, in the first stage's order, below it.
    """
    head = cut(first, depth)
    rescored = {q: {d: scores[q][d] for d in docs} for q, docs in head.items()}
    fused = fuse(rescored, head, method, param, depth)
    out: Run = {}
    for qid, ranking in cut(first, top_k).items():
        top = fused.get(qid, {})
        tail = [doc for doc, _ in ranked(ranking) if doc not in top]
        out[qid] = top | {doc: -float(i + 1) for i, doc in enumerate(tail)}
    return out


def fusion_grid(rc: RerankConfig) -> tuple[str, list]:
    """The fusion value's name (``ce_weight`` for wsum, ``rrf_k`` for rrf) and its grid."""
    return ("ce_weight", rc.fusion_weights) if rc.fusion == "wsum" else ("rrf_k", rc.rrf_ks)


def choose(
    first_dev: Run, scores_dev: Run, dev_qrels: Qrels, rc: RerankConfig, ndcg_k: int
) -> dict[str, Any]:
    """The depth and fusion value whose combination of the dev runs scores the best dev
    NDCG@``ndcg_k``; ties go to the smaller depth, then the first value in grid order.

    Returns:
        ``depth``, ``ce_weight`` (wsum) or ``rrf_k`` (rrf), ``dev_ndcg_at_<k>`` (the first
        stage, pure reranking of ``top_k`` and the choice) and ``..._grid`` (every pair).
    """
    name, grid = fusion_grid(rc)
    metric = f"ndcg_at_{ndcg_k}"

    def score(depth: int, value: float) -> float:
        run = combine(first_dev, scores_dev, rc.fusion, value, depth, rc.top_k)
        return mean_ndcg(dev_qrels, run, ndcg_k)

    tried = [(depth, value) for depth in depth_grid(rc.depths, rc.top_k) for value in grid]
    scores = {f"depth={d},{name}={v}": score(d, v) for d, v in tried}
    best = max(range(len(tried)), key=lambda i: (list(scores.values())[i], -i))
    depth, value = tried[best]
    pure = mean_ndcg(dev_qrels, scores_dev, ndcg_k)  # the cross-encoder's order alone
    dev = {
        "first_stage": mean_ndcg(dev_qrels, cut(first_dev, rc.top_k), ndcg_k),
        "reranked": pure,
        "chosen": scores[f"depth={depth},{name}={value}"],
    }
    log.info(
        "Rerank %s: depth=%d, %s=%s chosen on dev (%s %.4f; first stage %.4f, pure "
        "reranking %.4f)",
        rc.fusion, depth, name, value, metric, dev["chosen"], dev["first_stage"], pure,
    )  # fmt: skip
    return {"depth": depth, name: value, f"dev_{metric}": dev, f"dev_{metric}_grid": scores}


def rerank_run(
    run: Run,
    dataset: BeirDataset | None,
    cfg: Config,
    dev_run: Run | None = None,
    trained: Path | None = None,
) -> Reranking:
    """The rerank stage: ``rerank.model`` rescoring ``run``'s top ``rerank.top_k``, fused
    with the first stage as chosen on ``dev_run``.

    Args:
        run: The retrieval run of the test queries.
        dataset: The queries, documents and (for the choice) dev qrels; may be None when
            ``rerank.top_k`` is 0.
        cfg: The config; ``rerank.top_k`` 0 passes ``run`` through unchanged.
        dev_run: The retrieval run of the dev queries; empty or None (no dev split): pure
            reranking, said in a ``fusion_fallback`` entry.
        trained: The train_reranker stage's cross-encoder, used when ``rerank.model`` is
            ``trained``.
    """
    rc = cfg.rerank
    if rc.top_k == 0:
        log.info("rerank.top_k=0: passing the retrieval run through")
        return Reranking(run, {"top_k": 0})
    if dataset is None:
        raise ValueError("reranking needs the dataset's queries and documents")
    source = trained_cross_encoder(trained) if rc.model == TRAINED else rc.model
    model = load_cross_encoder(
        source,
        rc.max_length,
        trust_remote_code=cfg.rerank.trust_remote_code,
        backend=rc.backend,
        precision=rc.precision,
    )
    choices: dict[str, Any] = {"top_k": rc.top_k, "fusion": rc.fusion}
    dev_qrels = dataset.qrels.get(cfg.dataset.dev, {}) if cfg.dataset.dev else {}
    name, grid = fusion_grid(rc)
    if len(set(grid)) == 1 and depth_grid(rc.depths, rc.top_k) == [rc.top_k]:
        # One depth and one fusion value (e.g. pure reranking: weight 1 at top_k): nothing
        # to choose, so the dev queries are not scored.
        log.info("One rerank choice in the grids (depth=%d, %s=%s): not chosen on dev",
                 rc.top_k, name, grid[0])  # fmt: skip
        choices |= {"depth": rc.top_k, name: grid[0]}
    elif dev_run and dev_qrels:
        first_dev = subset(dev_run, dev_qrels)
        scores_dev = rerank(model, first_dev, dataset.queries, dataset.corpus, rc.top_k,
                            rc.batch_size)  # fmt: skip
        choices |= choose(first_dev, scores_dev, dev_qrels, rc, cfg.evaluate.ndcg_k)
    else:
        name, value = FALLBACK[rc.fusion]
        log.warning("No dev run to choose the rerank fusion on: %s=%s, not chosen", name, value)
        choices |= {"depth": rc.top_k, name: value, "fusion_fallback": "no dev split: not chosen"}
    value, depth = choices[name], choices["depth"]
    if rc.fusion == "wsum" and value == 0:
        log.info("Dev chose the first stage's order (ce_weight=0): the test run is not rescored")
        scores = {qid: dict.fromkeys(docs, 0.0) for qid, docs in cut(run, depth).items()}
    else:
        scores = rerank(model, run, dataset.queries, dataset.corpus, depth, rc.batch_size)
    return Reranking(combine(run, scores, rc.fusion, value, depth, rc.top_k), choices)
