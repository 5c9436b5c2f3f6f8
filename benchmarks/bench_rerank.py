"""Does irtune's rerank path cost anything, and what does each rerank backend trade?

The cross-encoder reranks BM25's top ``depth`` of a BEIR dataset's test queries (BM25: a
first stage any corpus has, with no bi-encoder to train). Two comparisons, in one process:

1. irtune's rerank path (``load_cross_encoder`` + ``irtune.rerank.rerank``) against a plain
   ``CrossEncoder.predict`` over the same (query, document) pairs, batch size and maximum
   length: interleaved passes, best of each kept; pairs/s, their ratio, and the largest
   difference between the two scores (the same model must score the same pairs alike).
2. Every ``rerank.backend``/``rerank.precision`` pair (torch first, the reference) through
   the product's own path: pairs/s, test NDCG@10 of the reranked run (pytrec_eval, the
   evaluate stage's), its difference from torch's (the encode backends' tolerance, 0.003,
   applies) and the largest score difference from torch's.

No cross-encoder weights can be had offline here: give ``--reranker`` one the pipeline
trained (``data/reranker`` of ``dvc exp run -S rerank.model=trained -S rerank.top_k=100``).
Without one the section records why it skipped. Run it through the runner, e.g.::

    PYTHONPATH=src python benchmarks/bench.py --only rerank --data ../shared/data/nfcorpus \
        --reranker <folder>
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.rerank")


def bench_rerank(
    data: Path,
    reranker: str | None,
    depth: int,
    max_length: int,
    batch_size: int,
    max_queries: int,
    repeats: int,
    backends: list[tuple[str, str]],
) -> dict[str, Any]:
    """irtune's rerank path vs plain ``CrossEncoder.predict``; then each backend's speed and
    NDCG@10 over the same candidates."""
    if not reranker:
        return {
            "skipped": "no cross-encoder given (--reranker / RERANKER=): none can be downloaded "
            "here; train one with `dvc exp run -S rerank.model=trained -S rerank.top_k=100` "
            "and pass its data/reranker"
        }
    import torch
    from sentence_transformers import CrossEncoder

    from irtune.beir import doc_text, read_beir
    from irtune.bm25 import bm25_search
    from irtune.config import EvaluateConfig
    from irtune.evaluate import evaluate_run
    from irtune.models import load_cross_encoder
    from irtune.rerank import rerank

    dataset = read_beir(data, ["test"])
    qrels = dataset.qrels["test"]
    queries = dataset.split_queries("test")
    if max_queries:
        queries = dict(list(queries.items())[:max_queries])
        qrels = {q: qrels[q] for q in queries if q in qrels}
    first = bm25_search(dataset.corpus, queries, depth)
    pairs = [(queries[q], doc_text(dataset.corpus[d])) for q, docs in first.items() for d in docs]
    n = len(pairs)
    first_ndcg = evaluate_run(qrels, first, EvaluateConfig())[0]["ndcg_at_10"]

    def ours_run(model) -> tuple[dict, float]:
        start = time.perf_counter()
        run = rerank(model, first, queries, dataset.corpus, depth, batch_size)
        return run, time.perf_counter() - start

    def flat(run: dict) -> np.ndarray:
        return np.array([run[q][d] for q, docs in first.items() for d in docs])

    # 1. The same model twice: plainly, and through irtune's loader and rerank function.
    #    Interleaved, so a change of background load hits both; the best of each is kept.
    plain = CrossEncoder(reranker, max_length=max_length)  # the device irtune picks too
    ours = load_cross_encoder(reranker, max_length)
    sigmoid = torch.nn.Sigmoid()
    for model in (plain, ours):  # warm-up: first-call allocations are not throughput
        model.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)
    plain_s, ours_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reference = plain.predict(pairs, batch_size=batch_size, activation_fn=sigmoid)
        plain_s.append(time.perf_counter() - start)
        ours_scores, seconds = ours_run(ours)
        ours_s.append(seconds)
    torch_scores = flat(ours_scores)
    comparison = {
        "plain_pairs_per_s": [round(n / s, 2) for s in plain_s],
        "irtune_pairs_per_s": [round(n / s, 2) for s in ours_s],
        "plain_best_pairs_per_s": round(n / min(plain_s), 2),
        "irtune_best_pairs_per_s": round(n / min(ours_s), 2),
        "ratio_irtune_over_plain": round(min(plain_s) / min(ours_s), 3),
        "max_abs_diff": float(np.abs(np.asarray(reference) - torch_scores).max()),
    }
    del plain

    # 2. Every backend, through the product's own path, scored on the test qrels.
    per_backend: dict[str, dict[str, Any]] = {}
    for backend, precision in backends:
        key = f"{backend}-{precision}"
        if (backend, precision) == ("torch", "fp32"):
            # The irtune torch path just measured above: its best pass, not another one.
            run, seconds, load_s = ours_scores, min(ours_s), 0.0
        else:
            start = time.perf_counter()
            try:
                model = load_cross_encoder(
                    reranker, max_length, backend=backend, precision=precision
                )
            except Exception as exc:  # a runtime missing here must not lose the other figures
                log.warning("%s: cannot load: %s", key, exc)
                per_backend[key] = {"error": str(exc)}
                continue
            load_s = time.perf_counter() - start
            model.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)
            run, seconds = ours_run(model)
            del model
        ndcg = evaluate_run(qrels, run, EvaluateConfig())[0]["ndcg_at_10"]
        per_backend[key] = {
            "load_and_export_s": round(load_s, 2),
            "pairs_per_s": round(n / seconds, 2),
            "ndcg_at_10": round(ndcg, 4),
            "max_abs_score_diff_vs_torch": round(float(np.abs(flat(run) - torch_scores).max()), 5),
        }
        log.info("%s: %s", key, per_backend[key])
    base = per_backend.get("torch-fp32")
    if base:
        for result in per_backend.values():
            if "pairs_per_s" in result:
                result["speedup_vs_torch"] = round(result["pairs_per_s"] / base["pairs_per_s"], 2)
                result["ndcg_delta_vs_torch"] = round(result["ndcg_at_10"] - base["ndcg_at_10"], 4)
    return {
        "reranker": str(reranker),
        "queries": len(first),
        "pairs": n,
        "depth": depth,
        "batch_size": batch_size,
        "max_length": max_length,
        "repeats": repeats,
        "first_stage": "bm25",
        "first_stage_ndcg_at_10": round(first_ndcg, 4),
        "irtune_vs_plain": comparison,
        "backends": per_backend,
    }
