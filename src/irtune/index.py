"""Faiss indexes over normalised embeddings (inner product = cosine), with a doc-id sidecar."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from irtune.config import IndexConfig
from irtune.errors import DataError
from irtune.io import atomic_path
from irtune.runs import DOC_IDS, read_doc_ids, write_doc_ids

log = logging.getLogger(__name__)

INDEX = "index.faiss"


def build_index(embeddings: np.ndarray, cfg: IndexConfig):
    """Build the index ``cfg.type`` names.

    - ``flat``: exact search; the right choice up to a few hundred thousand vectors.
    - ``hnsw``: a graph, no training, fast and high-recall queries at a memory cost.
    - ``ivf``: k-means cells; ``nprobe`` trades recall for speed; needs training data.
    """
    import faiss

    dim = embeddings.shape[1]
    if cfg.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.hnsw_ef_search
    else:
        # Faiss wants ~39 training points per cell; never ask for more cells than that allows.
        nlist = max(1, min(cfg.ivf_nlist, len(embeddings) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    index.add(embeddings)
    log.info("Built a %s index of %d vectors (dim %d)", cfg.type, index.ntotal, dim)
    return index


def flat_index(chunks: Iterable[np.ndarray]):
    """An exact (flat) index of the vectors ``chunks`` yields, added as they come: the index
    is the only copy of them all (:func:`irtune.encode.encode_chunks` yields such chunks)."""
    import faiss

    index = None
    for chunk in chunks:
        if index is None:
            index = faiss.IndexFlatIP(chunk.shape[1])
        index.add(chunk)
    if index is None:
        raise ValueError("no vectors to index")
    log.info("Built a flat index of %d vectors (dim %d)", index.ntotal, index.d)
    return index


def write_index(index, doc_ids: list[str], out_dir: Path) -> None:
    """Write ``index.faiss`` and its sidecar ``doc_ids.txt`` into ``out_dir``, atomically."""
    import faiss

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # Written by Python, a block at a time, through Faiss' callback writer: a failed write
        # or close (disk full) raises here, where faiss.write_index to a path only prints a
        # failed close to stderr and would move a truncated index into place; and no
        # serialised copy of the whole index is held beside it.
        with (tmp / INDEX).open("wb") as fh:
            faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write))
        write_doc_ids(tmp / DOC_IDS, doc_ids)


def read_index(in_dir: Path):
    """Read an index and its doc ids.

    Raises:
        DataError: If the index is missing, corrupt, or disagrees with its sidecar.
    """
    import faiss

    path = in_dir / INDEX
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: corrupt or truncated Faiss index: {exc}") from None
    doc_ids = read_doc_ids(in_dir / DOC_IDS)
    if index.ntotal != len(doc_ids):
        raise DataError(f"{path}: {index.ntotal} vectors but {len(doc_ids)} ids in {DOC_IDS}")
    return index, doc_ids
