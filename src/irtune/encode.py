"""Embed the corpus with the (trained) bi-encoder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from irtune.beir import Corpus, doc_text
from irtune.errors import DataError
from irtune.io import atomic_path
from irtune.runs import DOC_IDS, read_doc_ids, write_doc_ids

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"


#: Documents encoded per call to the model. The texts and embeddings of one chunk are held
#: beside the result, never the whole corpus' texts or several copies of its embeddings; a
#: corpus of at most this many documents is encoded in one call, as it always was.
ENCODE_CHUNK = 32_768


def encode_chunks(
    model, corpus: Corpus, batch_size: int, chunk: int = ENCODE_CHUNK
) -> Iterator[np.ndarray]:
    """Encode the corpus ``chunk`` documents at a time, each as ``title + " " + text``.

    Args:
        model: A SentenceTransformer.
        corpus: The documents, in the order their rows will have.
        batch_size: Encode batch size.
        chunk: Documents per call to the model.

    Yields:
        Consecutive ``(<= chunk, dim)`` float32 blocks of L2-normalised rows, in corpus order.
    """
    docs = iter(corpus.values())
    while texts := [doc_text(doc) for doc in islice(docs, chunk)]:
        embeddings = model.encode_document(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=True,
        )
        yield np.asarray(embeddings, dtype=np.float32)


def encode_corpus(model, corpus: Corpus, batch_size: int, chunk: int = ENCODE_CHUNK) -> np.ndarray:
    """Encode every document (:func:`encode_chunks`) into one matrix.

    Returns:
        A ``(len(corpus), dim)`` float32 matrix, row ``i`` the ``i``-th document.
    """
    log.info("Encoding %d documents (batch %d)", len(corpus), batch_size)
    out = np.empty((0, 0), dtype=np.float32)
    row = 0
    for block in encode_chunks(model, corpus, batch_size, chunk):
        if not row:
            out = np.empty((len(corpus), block.shape[1]), dtype=np.float32)
        out[row : row + len(block)] = block
        row += len(block)
    return out


def write_embeddings(embeddings: np.ndarray, doc_ids: list[str], out_dir: Path) -> None:
    """Write ``embeddings.npy`` and its row order ``doc_ids.txt`` into ``out_dir``, atomically."""
    if len(doc_ids) != embeddings.shape[0]:
        raise ValueError(f"{len(doc_ids)} doc ids for {embeddings.shape[0]} embeddings")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        np.save(tmp / EMBEDDINGS, embeddings)
        write_doc_ids(tmp / DOC_IDS, doc_ids)
    log.info("Wrote %s embeddings to %s", embeddings.shape, out_dir)


def read_embeddings(in_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Read what :func:`write_embeddings` wrote, checking that the two files agree.

    Raises:
        DataError: If a file is missing, corrupt or truncated.
    """
    path = in_dir / EMBEDDINGS
    try:
        embeddings = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated embeddings file: {exc}") from None
    doc_ids = read_doc_ids(in_dir / DOC_IDS)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(doc_ids):
        raise DataError(
            f"{path}: shape {embeddings.shape} does not match {len(doc_ids)} ids in {DOC_IDS}"
        )
    return embeddings, doc_ids
