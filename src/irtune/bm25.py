"""Lexical retrieval: BM25 over stemmed, stopword-free English tokens, with ``bm25s``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import islice

import numpy as np

from irtune.beir import Corpus, Queries, doc_text
from irtune.runs import Run

log = logging.getLogger(__name__)

#: bm25s's own defaults (Lucene's BM25 variant, k1 1.5, b 0.75).
METHOD = "lucene"
DEFAULT_K1 = 1.5
DEFAULT_B = 0.75
#: Documents tokenized at a time: only their texts and token strings are held at once, beside
#: the token ids of the corpus (:func:`corpus_token_ids`).
TOKENIZE_CHUNK = 32_768


def tokenize(texts: list[str], stemmer) -> list[list[str]]:
    """Lowercase, split on words, drop English stopwords, stem: the same for docs and queries.

    Args:
        texts: The texts.
        stemmer: A PyStemmer ``Stemmer.Stemmer``.

    Returns:
        One token list per text (possibly empty).
    """
    import bm25s

    return bm25s.tokenize(
        texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )


def corpus_token_ids(
    texts: Iterable[str], stemmer, chunk: int = TOKENIZE_CHUNK
) -> tuple[list[list[int]], dict[str, int]]:
    """Every text's tokens (:func:`tokenize`) as ids into a vocabulary numbered as it grows.

    What ``bm25s.BM25.index`` builds from token strings, built ``chunk`` texts at a time:
    the texts and token strings of the whole corpus are never held, only its ids.

    Returns:
        One id list per text, and the vocabulary (token -> id).
    """
    vocab: dict[str, int] = {}
    ids: list[list[int]] = []
    texts = iter(texts)
    while batch := list(islice(texts, chunk)):
        for tokens in tokenize(batch, stemmer):
            ids.append([vocab.setdefault(token, len(vocab)) for token in tokens])
    return ids, vocab


def bm25_search(
    corpus: Corpus,
    queries: Queries,
    top_k: int,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
) -> Run:
    """Index ``corpus`` (documents as :func:`irtune.beir.doc_text`) and retrieve for ``queries``.

    A query keeps at most ``top_k`` documents, and only those sharing a term with it: a
    score of 0 means no term matched, and the order among such documents would be arbitrary.
    Ties are broken by doc id, as :func:`irtune.io.write_trec_run` does.

    Args:
        corpus: The documents.
        queries: Query id -> text.
        top_k: Documents per query.
        k1: BM25 term-frequency saturation.
        b: BM25 document-length normalisation.

    Returns:
        The run; a query with no term in the corpus vocabulary gets an empty ranking.
    """
    import bm25s
    import Stemmer

    # bm25s sets its own logger to DEBUG on import, overriding the stage's logging setup.
    logging.getLogger("bm25s").setLevel(logging.INFO)
    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(corpus)
    log.info("Indexing %d documents for BM25 (k1=%g, b=%g)", len(doc_ids), k1, b)
    # scipy builds the score matrix in place of bm25s' own numpy sort, which holds about twice
    # as many arrays the size of the corpus' tokens; the matrix is the same, to the bit.
    retriever = bm25s.BM25(k1=k1, b=b, method=METHOD, csc_backend="scipy")
    texts = (doc_text(corpus[d]) for d in doc_ids)
    retriever.index(corpus_token_ids(texts, stemmer), show_progress=False)
    # Each doc's position in doc-id order: the secondary sort key of ties.
    id_rank = np.empty(len(doc_ids), dtype=np.int64)
    id_rank[np.argsort(np.array(doc_ids, dtype=object))] = np.arange(len(doc_ids))

    qids = list(queries)
    run: Run = {}
    unmatched = 0
    for qid, tokens in zip(qids, tokenize([queries[q] for q in qids], stemmer), strict=True):
        token_ids = retriever.get_tokens_ids(tokens)
        if not token_ids:
            unmatched += 1
            run[qid] = {}
            continue
        scores = retriever.get_scores_from_ids(token_ids)
        hits = np.flatnonzero(scores > 0)
        # irtune.runs.ranked's order (score, then doc id), vectorised over the corpus.
        hits = hits[np.lexsort((id_rank[hits], -scores[hits]))][:top_k]
        run[qid] = {doc_ids[i]: float(scores[i]) for i in hits}
    if unmatched:
        log.warning(
            "%d of %d queries share no term with the corpus: BM25 finds nothing for them",
            unmatched,
            len(qids),
        )
    return run
