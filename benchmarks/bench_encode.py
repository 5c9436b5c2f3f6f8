"""Does irtune's encode path cost anything, and what does each encode backend trade?

Two comparisons on one BEIR dataset's test split, in one process:

1. irtune's encode path (``load_encoder`` + ``encode_corpus``) against a plain
   ``SentenceTransformer.encode`` of the same documents, batch size and sequence length:
   interleaved passes, best of each kept; docs/s, their ratio, and the largest difference
   between the two embeddings (the same model must embed the same vectors).
2. Every ``encode.backend``/``encode.precision`` pair (:data:`BACKENDS`, torch first as the
   reference) through the product's own path: docs/s, queries/s, test NDCG@10 through
   irtune's flat index, dense search and pytrec_eval evaluation, and the cosine of each
   embedding to torch's.

Run it through the runner, e.g.::

    PYTHONPATH=src python benchmarks/bench.py --only encode --data ../shared/data/nfcorpus \
        --model <folder>
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

#: (backend, precision) pairs the encode section measures, torch first (the reference).
BACKENDS = [
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
]

log = logging.getLogger("bench.encode")


def bench_encode(
    data: Path,
    model_path: str,
    batch_size: int,
    max_seq_length: int,
    max_docs: int,
    repeats: int,
    backends: list[tuple[str, str]],
) -> dict[str, Any]:
    """irtune's encode path vs plain ``model.encode``; then each backend's speed and NDCG@10."""
    from sentence_transformers import SentenceTransformer

    from irtune.beir import doc_text, read_beir
    from irtune.config import EvaluateConfig, IndexConfig
    from irtune.dense import dense_search
    from irtune.encode import encode_corpus
    from irtune.evaluate import evaluate_run
    from irtune.index import build_index
    from irtune.models import load_encoder

    dataset = read_beir(data, ["test"])
    corpus = dataset.corpus
    if max_docs:
        corpus = dict(list(corpus.items())[:max_docs])
    texts = [doc_text(doc) for doc in corpus.values()]
    queries = dataset.split_queries("test")
    n = len(texts)

    # 1. The same model, twice: plainly, and through irtune's loader and encode function.
    #    Interleaved, so a change of background load hits both; the best of each is kept.
    plain = SentenceTransformer(model_path)  # the device irtune's loader picks too
    plain.max_seq_length = max_seq_length
    ours = load_encoder(model_path, "torch", "fp32", max_seq_length=max_seq_length)
    for model in (plain, ours):  # warm-up: first-call allocations are not throughput
        model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    plain_s, ours_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reference = plain.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        plain_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        encoded = encode_corpus(ours, corpus, batch_size)
        ours_s.append(time.perf_counter() - start)
    same = float(np.abs(reference - encoded).max())
    del plain
    comparison = {
        "plain_docs_per_s": [round(n / s, 2) for s in plain_s],
        "irtune_docs_per_s": [round(n / s, 2) for s in ours_s],
        "plain_best_docs_per_s": round(n / min(plain_s), 2),
        "irtune_best_docs_per_s": round(n / min(ours_s), 2),
        "ratio_irtune_over_plain": round(min(plain_s) / min(ours_s), 3),
        "max_abs_diff": same,
    }

    # 2. Every backend, through the product's own path, scored on the test split.
    per_backend: dict[str, dict[str, Any]] = {}
    torch_key = None
    for backend, precision in backends:
        key = f"{backend}-{precision}"
        if (backend, precision) == ("torch", "fp32"):
            # The irtune torch path just measured above: its best pass, not a third one.
            model, emb, encode_s, load_s = ours, encoded, min(ours_s), 0.0
        else:
            start = time.perf_counter()
            try:
                model = load_encoder(model_path, backend, precision, max_seq_length=max_seq_length)
            except Exception as exc:  # a runtime missing here must not lose the other figures
                log.warning("%s: cannot load: %s", key, exc)
                per_backend[key] = {"error": str(exc)}
                continue
            load_s = time.perf_counter() - start
            model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
            start = time.perf_counter()
            emb = encode_corpus(model, corpus, batch_size)
            encode_s = time.perf_counter() - start
        index = build_index(emb, IndexConfig(type="flat"))
        start = time.perf_counter()
        run = dense_search(model, index, list(corpus), queries, 100, batch_size)
        query_s = time.perf_counter() - start
        metrics = evaluate_run(dataset.qrels["test"], run, EvaluateConfig())[0]
        cosine = np.sum(reference * emb, axis=1)
        per_backend[key] = {
            "load_and_export_s": round(load_s, 2),
            "docs_per_s": round(n / encode_s, 2),
            "queries_per_s": round(len(queries) / query_s, 2),
            "ndcg_at_10": round(metrics["ndcg_at_10"], 4),
            "cosine_to_torch_min": round(float(cosine.min()), 5),
            "cosine_to_torch_mean": round(float(cosine.mean()), 5),
        }
        if torch_key is None and backend == "torch":
            torch_key = key
        del model, emb
        log.info("%s: %s", key, per_backend[key])
    if torch_key is not None:
        base = per_backend[torch_key]
        for result in per_backend.values():
            if "docs_per_s" in result:
                result["speedup_vs_torch"] = round(result["docs_per_s"] / base["docs_per_s"], 2)
                result["ndcg_delta_vs_torch"] = round(result["ndcg_at_10"] - base["ndcg_at_10"], 4)
    return {
        "docs": n,
        "queries": len(queries),
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "repeats": repeats,
        "irtune_vs_plain": comparison,
        "backends": per_backend,
    }
