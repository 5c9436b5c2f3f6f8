"""Rerank retrieved candidates with a cross-encoder (at inference, never as a trainer)."""

from __future__ import annotations

import logging

from irtune.beir import Corpus, Queries, doc_text
from irtune.errors import ConfigError
from irtune.io import Run

log = logging.getLogger(__name__)


def load_cross_encoder(name_or_path: str, max_length: int, trust_remote_code: bool = False):
    """Load a CrossEncoder from the hub or a local folder.

    Raises:
        ConfigError: If a local folder holds no loadable model.
    """
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(
            name_or_path, max_length=max_length, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load cross-encoder '{name_or_path}': {exc}") from None


def top_candidates(run: Run, top_k: int) -> Run:
    """Keep each query's ``top_k`` best documents."""
    return {
        qid: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
        for qid, docs in run.items()
    }


def rerank(model, run: Run, queries: Queries, corpus: Corpus, top_k: int, batch_size: int) -> Run:
    """Rescore each query's ``top_k`` candidates; scores are sigmoid-normalised to 0..1.

    The run that comes back holds only the reranked ``top_k`` documents per query.
    """
    import torch

    candidates = top_candidates(run, top_k)
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
