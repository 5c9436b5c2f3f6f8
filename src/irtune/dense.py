"""Dense retrieval: encode queries with the bi-encoder and search a Faiss index."""

from __future__ import annotations

import logging

import numpy as np

from irtune.beir import BeirDataset, Corpus, Queries
from irtune.config import Config
from irtune.encode import encode_chunks
from irtune.errors import DataError
from irtune.index import flat_index
from irtune.models import load_base_model
from irtune.runs import Run

log = logging.getLogger(__name__)


def encode_queries(model, queries: Queries, batch_size: int) -> np.ndarray:
    """Normalised float32 embeddings of ``queries``' texts, in their order."""
    log.info("Encoding %d queries", len(queries))
    return model.encode_query(
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
    need this one-off search, without the pipeline's stored index. The embeddings go into
    the index a chunk at a time, so the index is their only full copy.
    """
    log.info("Encoding %d documents (batch %d)", len(corpus), encode_batch_size)
    index = flat_index(encode_chunks(model, corpus, encode_batch_size))
    return dense_search(model, index, list(corpus), queries, top_k, query_batch_size)


def zero_shot_run(dataset: BeirDataset, cfg: Config) -> Run:
    """The base model's exact dense run of the test queries: the zero-shot baseline.

    The model runs exactly as published (its own ``max_seq_length``). The run goes as deep
    as the deepest reported cut-off, independently of ``retrieve.top_k``, so a change there
    does not recompute it. With ``evaluate.baseline`` off it is empty.
    """
    if not cfg.evaluate.baseline:
        log.info("evaluate.baseline=false: no zero-shot run")
        return {}
    ev = cfg.evaluate
    model = load_base_model(cfg)
    return exact_search(
        model,
        dataset.corpus,
        dataset.split_queries(cfg.dataset.test_split),
        max(ev.ndcg_k, ev.recall_k, ev.mrr_k, ev.map_k),
        cfg.encode.batch_size,
        cfg.retrieve.batch_size,
    )
