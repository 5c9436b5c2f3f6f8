"""The retrieve stage's recipe: a first pass, pseudo-relevance feedback, fusion.

``retrieve.mode`` picks the first pass: ``dense`` (the Faiss index, :mod:`irtune.dense`),
``bm25`` (:mod:`irtune.bm25`) or ``hybrid`` (both, fused: :mod:`irtune.fusion`). What is
chosen on the dev split -- the dense run's feedback (:mod:`irtune.feedback`), a hybrid's
fusion parameter -- is chosen there before the test queries are touched, and comes back
with the dev figures behind each choice. Feedback documents come from the best first pass
there is: in hybrid mode, a first fusion with BM25.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irtune.beir import BeirDataset, Qrels, Queries
from irtune.bm25 import bm25_search
from irtune.config import Config
from irtune.dense import encode_queries, search
from irtune.errors import DataError
from irtune.feedback import choose_prf, feedback_rows, prf_grid, rocchio
from irtune.fusion import FALLBACK_FUSION, FusionChoice, choose_fusion, fuse
from irtune.index import INDEX, read_index
from irtune.models import load_encoder
from irtune.runs import Run, subset

log = logging.getLogger(__name__)

#: Why a choice fell back: recorded beside the value in ``metrics/retrieve.json``.
NO_DEV = "no dev split: not chosen"


@dataclass
class DenseIndex:
    """What dense retrieval searches: a Faiss index, its doc ids in row order, and the model
    that embeds the queries for it."""

    index: Any
    doc_ids: list[str]
    model: Any


@dataclass
class Retrieval:
    """The test queries' run, and what was chosen on dev with the dev figures behind it."""

    run: Run
    #: ``mode``, ``top_k``, then e.g. ``prf_k``, ``prf_beta``, ``dense_weight`` and the dev
    #: scores (``dev_ndcg_at_10``, ``..._grid``): ``metrics/retrieve.json``.
    choices: dict[str, Any] = field(default_factory=dict)
    #: The same recipe's run of the dev queries (empty without a dev split): the rerank
    #: stage chooses its depth and fusion on it.
    dev_run: Run = field(default_factory=dict)


def uses_dense(cfg: Config) -> bool:
    """Whether the recipe searches the dense index (every mode but ``bm25``)."""
    return cfg.retrieve.mode != "bm25"


def chooses_on_dev(cfg: Config) -> bool:
    """Whether a parameter is chosen on the dev split (a hybrid's fusion, dense feedback):
    when the recipe has one to choose and the dataset has a dev split."""
    wants = cfg.retrieve.mode == "hybrid" or (cfg.retrieve.prf and uses_dense(cfg))
    return wants and bool(cfg.dataset.dev)


def splits(cfg: Config) -> list[str]:
    """The qrels splits the recipe reads: test, and dev when the dataset has one (choices
    are made there, and the rerank stage makes its own on the dev run)."""
    if cfg.dataset.dev:
        return [cfg.dataset.test_split, cfg.dataset.dev]
    return [cfg.dataset.test_split]


def open_dense_index(index_dir: Path, model_dir: Path, cfg: Config) -> DenseIndex:
    """Read the index and load the query encoder on the documents' engine
    (``encode.backend``, ``encode.precision``, ``encode.max_seq_length``).

    Raises:
        DataError: If the model embeds in another dimension than the index holds.
    """
    index, doc_ids = read_index(index_dir)
    model = load_encoder(
        str(model_dir),
        backend=cfg.encode.backend,
        precision=cfg.encode.precision,
        trust_remote_code=cfg.model.trust_remote_code,
        max_seq_length=cfg.encode.max_seq_length,
    )
    dim = model.get_embedding_dimension()
    if dim is not None and dim != index.d:
        raise DataError(
            f"{index_dir / INDEX}: the index holds {index.d}-dimensional vectors but the "
            f"model {model_dir} embeds in {dim}: rebuild the index with this model"
        )
    return DenseIndex(index, doc_ids, model)


def run_queries(dataset: BeirDataset, cfg: Config) -> Queries:
    """The queries the recipe runs: dev first (when the dataset has a dev split), then test.
    One encoding and one BM25 pass serve both."""
    test = dataset.split_queries(cfg.dataset.test_split)
    return {**dataset.split_queries(cfg.dataset.dev), **test} if cfg.dataset.dev else test


def bm25_run(dataset: BeirDataset, cfg: Config) -> Run | None:
    """The BM25 run of :func:`run_queries`, or None when the mode has no BM25 pass (``dense``)."""
    rc = cfg.retrieve
    if rc.mode == "dense":
        return None
    return bm25_search(dataset.corpus, run_queries(dataset, cfg), rc.top_k, rc.bm25_k1, rc.bm25_b)


def retrieve(
    dataset: BeirDataset,
    cfg: Config,
    dense: DenseIndex | None = None,
    sparse: Run | None = None,
) -> Retrieval:
    """Run the retrieval recipe ``cfg.retrieve`` describes for the test queries.

    Args:
        dataset: The BEIR dataset, with the test split and, if :func:`chooses_on_dev`, the
            dev split (:func:`splits`).
        cfg: The config (``retrieve``, ``dataset`` splits, ``evaluate.ndcg_k``).
        dense: The dense index; needed unless ``retrieve.mode`` is ``bm25``.
        sparse: The BM25 run (:func:`bm25_run`) if the caller ran it already; else it is
            run here when the mode needs it.

    Returns:
        The test run and the dev choices.
    """
    rc = cfg.retrieve
    test = dataset.split_queries(cfg.dataset.test_split)
    dev_qrels = dataset.qrels[cfg.dataset.dev] if chooses_on_dev(cfg) else {}
    queries = run_queries(dataset, cfg)
    qids = list(queries)
    choices: dict[str, Any] = {"mode": rc.mode, "top_k": rc.top_k}

    # 1. The first pass: the dense run and the BM25 run.
    dense_run = emb = None
    if uses_dense(cfg):
        if dense is None:
            raise ValueError(f"retrieve.mode={rc.mode} needs the dense index")
        emb = encode_queries(dense.model, queries, rc.batch_size)
        dense_run = search(dense.index, dense.doc_ids, qids, emb, rc.top_k)
    if sparse is None:
        sparse = bm25_run(dataset, cfg)

    # 2. Pseudo-relevance feedback, if dev finds it helps (without a dev split: none).
    if rc.prf and dense_run is not None:
        dense_run, feedback = _feedback(dense, qids, emb, dense_run, sparse, dev_qrels, cfg)
        choices |= feedback

    # 3. A hybrid's fusion, chosen on dev, of the final dense run and the BM25 run.
    dev = dataset.split_queries(cfg.dataset.dev) if cfg.dataset.dev else {}
    if rc.mode != "hybrid":
        final = dense_run if dense_run is not None else sparse
        return Retrieval(subset(final, test), choices, subset(final, dev))
    param, fusion = _fusion(dense_run, sparse, dev_qrels, cfg)

    def fused(qids: Queries) -> Run:
        return fuse(subset(dense_run, qids), subset(sparse, qids), rc.fusion, param, rc.top_k)

    return Retrieval(fused(test), choices | fusion, fused(dev) if dev else {})


def _fusion(
    dense_run: Run, sparse: Run, dev_qrels: Qrels, cfg: Config
) -> tuple[float, dict[str, Any]]:
    """The final fusion's parameter, chosen on dev (a fallback without one), and the record
    of the choice."""
    rc = cfg.retrieve
    if not dev_qrels:
        name, param = FALLBACK_FUSION[rc.fusion]
        log.warning("No dev split to choose the fusion on: %s=%s, not chosen", name, param)
        return param, {"fusion": rc.fusion, name: param, "fusion_fallback": NO_DEV}
    choice = _dev_fusion(dense_run, sparse, dev_qrels, cfg)
    return choice.param, {
        "fusion": rc.fusion,
        choice.param_name: choice.param,
        f"dev_{choice.metric}": choice.dev,
        f"dev_{choice.metric}_grid": choice.grid,
    }


def _dev_fusion(dense_run: Run, sparse: Run, dev_qrels: Qrels, cfg: Config) -> FusionChoice:
    """A hybrid's fusion parameter for ``dense_run``, chosen on dev."""
    rc = cfg.retrieve
    return choose_fusion(
        subset(dense_run, dev_qrels),
        subset(sparse, dev_qrels),
        dev_qrels,
        rc.fusion,
        rc.fusion_weights if rc.fusion == "wsum" else rc.rrf_ks,
        rc.top_k,
        cfg.evaluate.ndcg_k,
    )


def _feedback(
    dense: DenseIndex,
    qids: list[str],
    emb: np.ndarray,
    dense_run: Run,
    sparse: Run | None,
    dev_qrels: Qrels,
    cfg: Config,
) -> tuple[Run, dict[str, Any]]:
    """Rocchio feedback with ``(k, beta)`` chosen on dev; the dense run searched again.

    Each query moves toward the top documents of the best first pass there is. In hybrid
    mode (``sparse`` given) that is a first fusion with BM25, whose parameter is chosen on
    dev first; ``(k, beta)`` is then scored by the dev NDCG of the fused run.

    Returns:
        The new dense run of every query in ``qids``, and what was chosen. Without a dev
        split: ``dense_run`` itself, and no feedback.
    """
    rc = cfg.retrieve
    if not dev_qrels:
        log.warning("No dev split to choose the dense feedback on: no feedback")
        return dense_run, {"prf_k": 0, "prf_fallback": NO_DEV}
    chosen: dict[str, Any] = {}
    first_pass = combine = None  # dense mode: the dense search's own top documents
    if sparse is not None:
        first = _dev_fusion(dense_run, sparse, dev_qrels, cfg)
        first_pass = fuse(dense_run, sparse, rc.fusion, first.param, rc.top_k)
        sparse_dev = subset(sparse, dev_qrels)

        def combine(run: Run) -> Run:
            return fuse(run, sparse_dev, rc.fusion, first.param, rc.top_k)

        chosen |= {"prf_first_pass": "hybrid", f"prf_first_pass_{first.param_name}": first.param}
    dev_rows = [i for i, q in enumerate(qids) if q in dev_qrels]
    choice = choose_prf(
        dense.index,
        dense.doc_ids,
        [qids[i] for i in dev_rows],
        emb[dev_rows],
        dev_qrels,
        prf_grid(rc.prf_ks, rc.prf_betas),
        rc.top_k,
        cfg.evaluate.ndcg_k,
        first_pass=None if first_pass is None else subset(first_pass, dev_qrels),
        combine=combine,
    )
    rows = None if first_pass is None else feedback_rows(first_pass, qids, dense.doc_ids, choice.k)
    emb = rocchio(dense.index, emb, choice.k, choice.beta, rows)
    chosen |= {
        "prf_k": choice.k,
        "prf_beta": choice.beta,
        f"dev_{choice.metric}_prf_grid": choice.grid,
    }
    return search(dense.index, dense.doc_ids, qids, emb, rc.top_k), chosen
