"""Dense retrieval: encode the evaluation queries and search the Faiss index."""

from __future__ import annotations

import logging

import numpy as np

from irtune.beir import Queries
from irtune.errors import DataError
from irtune.io import Run

log = logging.getLogger(__name__)


def dense_search(
    model, index, doc_ids: list[str], queries: Queries, top_k: int, batch_size: int
) -> Run:
    """Retrieve the ``top_k`` nearest documents of every query.

    A ``top_k`` larger than the corpus is clamped to the corpus size, with a warning: every
    document is then retrieved, which is what such a request can only mean.

    Raises:
        DataError: If the model's embedding size differs from the index's.
    """
    if top_k > index.ntotal:
        log.warning("retrieve.top_k=%d exceeds the corpus (%d docs); clamping", top_k, index.ntotal)
        top_k = index.ntotal
    qids = list(queries)
    log.info("Encoding %d queries", len(qids))
    emb = model.encode(
        [queries[q] for q in qids],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)
    if emb.shape[1] != index.d:
        raise DataError(
            f"the model embeds in {emb.shape[1]} dimensions but the index holds {index.d}: "
            "was the index built with another model?"
        )
    scores, rows = index.search(emb, top_k)
    run: Run = {}
    for qid, q_scores, q_rows in zip(qids, scores, rows, strict=True):
        # Faiss pads with -1 when an approximate index finds fewer than top_k hits.
        run[qid] = {doc_ids[r]: float(s) for s, r in zip(q_scores, q_rows, strict=True) if r >= 0}
    return run
