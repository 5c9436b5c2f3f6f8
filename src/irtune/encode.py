"""Embed the corpus with the (trained) bi-encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from irtune.beir import Corpus, doc_text
from irtune.errors import DataError
from irtune.io import atomic_path
from irtune.runs import DOC_IDS, read_doc_ids, write_doc_ids

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"


def encode_corpus(model, corpus: Corpus, batch_size: int) -> np.ndarray:
    """Encode every document as ``title + " " + text``, L2-normalised, float32.

    Args:
        model: A SentenceTransformer.
        corpus: The documents, in the order their rows will have.
        batch_size: Encode batch size.

    Returns:
        A ``(len(corpus), dim)`` float32 matrix.
    """
    texts = [doc_text(doc) for doc in corpus.values()]
    log.info("Encoding %d documents (batch %d)", len(texts), batch_size)
    return model.encode_document(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=True,
    ).astype(np.float32)


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
