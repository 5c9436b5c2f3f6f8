"""Rerank retrieved candidates with a cross-encoder (at inference, never as a trainer)."""

from __future__ import annotations

import logging

from irtune.beir import BeirDataset, Corpus, Queries, doc_text
from irtune.config import Config
from irtune.models import load_cross_encoder
from irtune.runs import Run, cut

log = logging.getLogger(__name__)


def rerank(model, run: Run, queries: Queries, corpus: Corpus, top_k: int, batch_size: int) -> Run:
    """Rescore each query's ``top_k`` candidates; scores are sigmoid-normalised to 0..1.

    The run that comes back holds only the reranked ``top_k`` documents per query.
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
    out: Run = {}
    for (qid, did), score in zip(pairs, scores, strict=True):
        out.setdefault(qid, {})[did] = float(score)
    return out


def rerank_run(run: Run, dataset: BeirDataset | None, cfg: Config) -> Run:
    """The rerank stage: ``rerank.model`` rescoring ``run``'s top ``rerank.top_k``.

    Args:
        run: The retrieval run.
        dataset: The queries and documents; may be None when ``rerank.top_k`` is 0.
        cfg: The config; ``rerank.top_k`` 0 passes ``run`` through unchanged.
    """
    rc = cfg.rerank
    if rc.top_k == 0:
        log.info("rerank.top_k=0: passing the retrieval run through")
        return run
    if dataset is None:
        raise ValueError("reranking needs the dataset's queries and documents")
    model = load_cross_encoder(
        rc.model, rc.max_length, trust_remote_code=cfg.rerank.trust_remote_code
    )
    return rerank(model, run, dataset.queries, dataset.corpus, rc.top_k, rc.batch_size)
