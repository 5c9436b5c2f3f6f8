"""What do irtune's approximate indexes trade against exact search, as the corpus grows?

irtune's ``build_index`` (flat, HNSW, IVF) on synthetic clustered corpora of each size
(``--index-sizes``; default 100,000 and 1,000,000 vectors of 384 dims): build time,
queries/s and recall@10 against flat (exact) search, for several ``ef_search`` (HNSW) and
``nprobe`` (IVF) values. The vectors are a mixture of low-rank Gaussians, shaped like text
embeddings (topical clusters of low intrinsic dimension), because isotropic noise would be
an unrealistic worst case for any approximate index. No model or dataset is needed.

Run it through the runner, e.g.::

    PYTHONPATH=src python benchmarks/bench.py --only index --index-sizes 100000
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from common import load_state

log = logging.getLogger("bench.index")


def clustered_vectors(
    n: int, dim: int, centres: np.ndarray, bases: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``n`` unit vectors from a mixture of low-rank Gaussians around ``centres``.

    Each point is its (uniformly drawn) centre, plus a Gaussian in that cluster's own
    ``rank``-dimensional subspace (``bases``), plus a little isotropic noise; then normalised.
    Text embeddings look like this: topical clusters with a low intrinsic dimension. Pure
    isotropic noise would be an unrealistic worst case for any approximate index.
    """
    clusters, _, rank = bases.shape
    out = np.empty((n, dim), dtype=np.float32)
    labels = rng.integers(clusters, size=n)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    for k in range(clusters):
        rows = order[bounds[k] : bounds[k + 1]]
        if rows.size == 0:
            continue
        z = rng.standard_normal((rows.size, rank), dtype=np.float32)
        noise = rng.standard_normal((rows.size, dim), dtype=np.float32) * (0.1 / np.sqrt(dim))
        out[rows] = centres[k] + z @ bases[k].T + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _mixture(clusters: int, dim: int, rank: int, spread: float, rng: np.random.Generator):
    # Centres in a random rank-dim subspace: topics are related, so neighbouring clusters
    # touch (random centres in 384 dims would be orthogonal, far apart, and trivially easy).
    topics = np.linalg.qr(rng.standard_normal((dim, rank), dtype=np.float32))[0]
    centres = rng.standard_normal((clusters, rank), dtype=np.float32) @ topics.T
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Orthonormal bases scaled so that the in-cluster part has norm ~spread (cos to centre
    # ~ 1 / sqrt(1 + spread^2)).
    bases = np.linalg.qr(rng.standard_normal((clusters, dim, rank), dtype=np.float32))[0]
    return centres, (bases * (spread / np.sqrt(rank))).astype(np.float32)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def _search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, rows = index.search(queries, k)
    return rows, len(queries) / (time.perf_counter() - start)


def bench_index(
    sizes: list[int],
    dim: int,
    n_queries: int,
    hnsw_m: int,
    ef_searches: list[int],
    nprobes: list[int],
    seed: int,
) -> dict[str, Any]:
    """Flat, HNSW and IVF from irtune's ``build_index`` on synthetic clustered vectors."""
    import faiss

    from irtune.config import IndexConfig
    from irtune.index import build_index

    k, rank, spread, per_cluster = 10, 16, 1.0, 100
    results: dict[str, Any] = {
        "distribution": (
            f"mixture of n/{per_cluster} low-rank Gaussians: unit centres drawn in one random "
            f"{rank}-dim subspace (related topics, touching clusters), each cluster spread in "
            f"its own random {rank}-dim subspace with norm ~{spread} "
            "(cosine to centre ~0.7), plus isotropic noise of norm 0.1; normalised. Queries "
            "are fresh draws from the same mixture. Ground truth: flat (exact) top 10."
        ),
        "dim": dim,
        "queries": n_queries,
        "k": k,
        "faiss_threads": faiss.omp_get_max_threads(),
        "sizes": {},
    }
    for n in sizes:
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        centres, bases = _mixture(max(10, n // per_cluster), dim, rank, spread, rng)
        vectors = clustered_vectors(n, dim, centres, bases, rng)
        queries = clustered_vectors(n_queries, dim, centres, bases, rng)
        log.info("%d vectors generated in %.1fs", n, time.perf_counter() - start)
        entry: dict[str, Any] = {"load_before": load_state()}

        start = time.perf_counter()
        flat = build_index(vectors, IndexConfig(type="flat"))
        flat_build = time.perf_counter() - start
        truth, flat_qps = _search(flat, queries, k)
        del flat
        entry["flat"] = {"build_s": round(flat_build, 2), "qps": round(flat_qps, 1), "recall": 1.0}

        start = time.perf_counter()
        hnsw = build_index(
            vectors, IndexConfig(type="hnsw", hnsw_m=hnsw_m, hnsw_ef_search=ef_searches[0])
        )
        entry["hnsw"] = {
            "m": hnsw_m,
            "ef_construction": hnsw.hnsw.efConstruction,
            "build_s": round(time.perf_counter() - start, 2),
            "search": {},
        }
        for ef in ef_searches:
            hnsw.hnsw.efSearch = ef
            found, qps = _search(hnsw, queries, k)
            entry["hnsw"]["search"][f"ef_search={ef}"] = _point(found, truth, qps, flat_qps)
        del hnsw
        log.info("%d: hnsw %s", n, entry["hnsw"])

        # ~sqrt(n) cells, a power of two; irtune caps it at n/39 (Faiss' training minimum).
        nlist = int(2 ** round(np.log2(np.sqrt(n))))
        start = time.perf_counter()
        ivf = build_index(vectors, IndexConfig(type="ivf", ivf_nlist=nlist, ivf_nprobe=nprobes[0]))
        entry["ivf"] = {
            "nlist": ivf.nlist,
            "build_s": round(time.perf_counter() - start, 2),
            "search": {},
        }
        for nprobe in nprobes:
            ivf.nprobe = min(nprobe, ivf.nlist)
            found, qps = _search(ivf, queries, k)
            entry["ivf"]["search"][f"nprobe={ivf.nprobe}"] = _point(found, truth, qps, flat_qps)
        del ivf, vectors
        log.info("%d: ivf %s", n, entry["ivf"])
        entry["load_after"] = load_state()
        results["sizes"][str(n)] = entry
    return results


def _point(found: np.ndarray, truth: np.ndarray, qps: float, flat_qps: float) -> dict[str, float]:
    return {
        "recall_at_10": round(_recall(found, truth), 4),
        "qps": round(qps, 1),
        "speedup_vs_flat": round(qps / flat_qps, 1),
    }
