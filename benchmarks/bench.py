"""irtune's benchmark suite: the product's code paths against the plain library calls.

Sections (``--only`` picks some, comma-separated):

- ``encode``: irtune's encode path (``load_encoder`` + ``encode_corpus``) against a plain
  ``SentenceTransformer.encode`` of the same documents, batch size and sequence length,
  interleaved in the same run; then every ``encode.backend``/``encode.precision`` pair: docs/s,
  and test NDCG@10 through irtune's own flat index, dense search and pytrec_eval evaluation.
- ``train``: irtune's train stage code (``irtune.train.train``) against a plain
  SentenceTransformerTrainer script: same MNRL loss, rows, batch size, sequence length,
  sampler, learning rate and seed. Pairs/s end to end (model load + train + save, for both)
  and of the training loop alone.
- ``orchestration``: a throwaway copy of this repository (git + DVC) on the tiny test assets:
  the time of a no-op ``dvc repro``, and which stages rerun after a change to
  ``rerank.top_k`` and to ``retrieve.top_k``.
- ``index``: irtune's ``build_index`` (flat, HNSW, IVF) on synthetic clustered corpora:
  build time, queries/s, recall@10 against flat.

Every section records ``os.getloadavg()`` and ``os.cpu_count()`` before and after it ran.
The figures go to ``--out`` (default ``reports/bench/bench.json``) and a table is printed.
``--quick`` shrinks every size for a smoke run (the tests use it on the tiny assets).

Run ``make bench`` (full sizes on NFCorpus), or e.g.::

    python benchmarks/bench.py --data ../shared/data/nfcorpus --model <folder> --only index
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("encode", "train", "orchestration", "index")
#: (backend, precision) pairs the encode section measures, torch first (the reference).
BACKENDS = [
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
]
#: Untracked pipeline products never copied into the throwaway repository (as test_e2e).
GENERATED = ("dvc.lock", "params.yaml", "metrics/", "data/", "mlflow.db", "reports/")

log = logging.getLogger("bench")


# --------------------------------------------------------------------------- the machine


def load_state() -> dict[str, Any]:
    """The 1, 5 and 15 minute load averages and the CPU count, now."""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, memory, library versions."""
    import faiss
    import sentence_transformers
    import torch
    import transformers

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "faiss": faiss.__version__,
    }
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def wait_for_quiet(threshold: float, poll_s: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (or ``max_wait_s`` passed).

    Other jobs on a 2-core machine halve every figure; the JSON says whether it was quiet.
    """
    start = time.monotonic()
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() - start < max_wait_s:
        log.info("1-minute load %.2f >= %.2f: waiting %.0fs", load, threshold, poll_s)
        time.sleep(poll_s)
    quiet = os.getloadavg()[0] < threshold
    if not quiet:
        log.warning("Load never fell below %.2f in %.0fs: running anyway", threshold, max_wait_s)
    return {
        "threshold": threshold,
        "waited_s": round(time.monotonic() - start, 1),
        "reached": quiet,
        **load_state(),
    }


def section(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one section, recording the load before and after and its wall time."""
    before = load_state()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return {
        "load_before": before,
        "load_after": load_state(),
        "wall_s": round(time.perf_counter() - start, 1),
        **result,
    }


# --------------------------------------------------------------------------- encode


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
    plain = SentenceTransformer(model_path, device="cpu")
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


# --------------------------------------------------------------------------- train


class _TrainLoopTime(logging.Handler):
    """Catches ``irtune.train``'s "Trained N steps in S s" record: the loop's own time."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Trained %d steps"):
            self.seconds = float(record.args[1])


def _plain_train(rows: list[dict], model_path: str, cfg, out_dir: Path) -> float:
    """The plain Sentence Transformers script irtune's train stage is measured against.

    Returns:
        The seconds ``trainer.train()`` took.
    """
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = cfg.train.max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "work"),
        num_train_epochs=1,
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        warmup_steps=cfg.train.warmup_ratio,
        seed=cfg.train.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        loss=MultipleNegativesRankingLoss(model),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out_dir / "model"))
    return seconds


def bench_train(
    data: Path, model_path: str, pairs: int, batch_size: int, max_seq_length: int, repeats: int
) -> dict[str, Any]:
    """irtune's train code path vs a plain SentenceTransformerTrainer script, interleaved."""
    from irtune.beir import read_beir
    from irtune.config import validate
    from irtune.prepare import build_rows
    from irtune.train import train

    cfg = validate(
        {
            "model": {"base": model_path},
            "prepare": {"max_pairs": pairs},
            "train": {
                "epochs": 1,
                "batch_size": batch_size,
                "max_seq_length": max_seq_length,
                "eval_dev": False,  # the plain script has no evaluator either
                "logging_steps": 10,
            },
        },
        source="bench",
    )
    dataset = read_beir(data, [cfg.dataset.train_split, cfg.dataset.dev_split])
    rows = build_rows(dataset, cfg)
    catcher = _TrainLoopTime()
    logging.getLogger("irtune.train").addHandler(catcher)
    runs: dict[str, list[dict[str, float]]] = {"irtune": [], "plain": []}
    try:
        with tempfile.TemporaryDirectory(prefix="irtune-bench-train-") as tmp:
            for rep in range(repeats):
                work = Path(tmp) / str(rep)
                start = time.perf_counter()
                train(rows, dataset, cfg, work / "irtune" / "model", work / "irtune" / "work")
                total = time.perf_counter() - start
                runs["irtune"].append({"total_s": total, "loop_s": catcher.seconds or total})
                start = time.perf_counter()
                loop = _plain_train(rows, model_path, cfg, work / "plain")
                runs["plain"].append({"total_s": time.perf_counter() - start, "loop_s": loop})
    finally:
        logging.getLogger("irtune.train").removeHandler(catcher)

    def best(name: str, key: str) -> float:
        return min(r[key] for r in runs[name])

    n = len(rows)
    return {
        "pairs": n,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "loss": "mnrl",
        "repeats": repeats,
        "timing": "end_to_end = model load + trainer set-up + train + save, for both; "
        "loop = trainer.train() alone; best of the repeats",
        "irtune_pairs_per_s_end_to_end": round(n / best("irtune", "total_s"), 2),
        "plain_pairs_per_s_end_to_end": round(n / best("plain", "total_s"), 2),
        "ratio_end_to_end": round(best("plain", "total_s") / best("irtune", "total_s"), 3),
        "irtune_pairs_per_s_loop": round(n / best("irtune", "loop_s"), 2),
        "plain_pairs_per_s_loop": round(n / best("plain", "loop_s"), 2),
        "ratio_loop": round(best("plain", "loop_s") / best("irtune", "loop_s"), 3),
        "runs": {k: [{m: round(s, 2) for m, s in r.items()} for r in v] for k, v in runs.items()},
    }


# --------------------------------------------------------------------------- orchestration


def _set_conf(config: Path, **sections: dict[str, Any]) -> None:
    import yaml

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    for name, values in sections.items():
        cfg[name].update(values)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def bench_orchestration(noop_repeats: int) -> dict[str, Any]:
    """No-op ``dvc repro`` time, and which stages a top_k change reruns, on the tiny assets."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_assets import build_all

    from irtune.workspace import copy_checkout

    with tempfile.TemporaryDirectory(prefix="irtune-bench-dvc-") as tmp:
        assets = build_all(Path(tmp) / "assets")
        root = Path(tmp) / "repo"
        root.mkdir()
        copy_checkout(REPO, root, skip=GENERATED)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")
        }
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH="src",  # the copy's own irtune
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            DVC_NO_ANALYTICS="1",
        )

        def run(*cmd: str) -> tuple[str, float]:
            start = time.perf_counter()
            proc = subprocess.run(
                cmd, cwd=root, env=env, capture_output=True, text=True, check=False
            )
            took = time.perf_counter() - start
            out = proc.stdout + proc.stderr
            if proc.returncode:
                raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{out[-4000:]}")
            return out, took

        def stages(out: str) -> list[str]:
            return re.findall(r"Running stage '([^']+)'", out)

        config = root / "conf" / "config.yaml"
        _set_conf(
            config,
            dataset={"name": "tiny", "source": str(assets["beir"])},
            model={"base": str(assets["bi_encoder"])},
            rerank={"model": str(assets["cross_encoder"]), "max_length": 128, "top_k": 10},
            train={"max_seq_length": 64, "batch_size": 8, "epochs": 1, "logging_steps": 2},
            retrieve={"top_k": 20},
            encode={"batch_size": 16},
        )
        for cmd in (
            ("git", "init", "-q"),
            ("git", "config", "user.name", "irtune bench"),
            ("git", "config", "user.email", "bench@irtune.invalid"),
            ("git", "config", "commit.gpgsign", "false"),
            ("python", "-m", "irtune.compose"),
            ("git", "add", "-A"),
            ("git", "commit", "-q", "-m", "bench: tiny config"),
        ):
            run(*cmd)
        out, first_s = run("dvc", "repro")
        first = stages(out)
        noop_s, noop_ran = [], []
        for _ in range(noop_repeats):
            out, took = run("dvc", "repro")
            noop_s.append(round(took, 2))
            noop_ran += stages(out)
        changes = {}
        for key, section_values in (
            ("rerank.top_k", {"rerank": {"top_k": 5}}),
            ("retrieve.top_k", {"retrieve": {"top_k": 15}}),
        ):
            _set_conf(config, **section_values)
            run("python", "-m", "irtune.compose")
            out, took = run("dvc", "repro")
            changes[key] = {"reran": stages(out), "seconds": round(took, 1)}
    return {
        "workspace": "a git + DVC copy of this checkout on the tiny test assets",
        "first_repro_s": round(first_s, 1),
        "first_repro_stages": first,
        "noop_repro_s": noop_s,
        "noop_repro_median_s": round(statistics.median(noop_s), 2),
        "noop_repro_reran": noop_ran,
        "changes": changes,
        "expected": {
            "rerank.top_k": ["rerank", "evaluate"],
            "retrieve.top_k": ["retrieve", "rerank", "evaluate"],
        },
    }


# --------------------------------------------------------------------------- index


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
        log.info("index: %d vectors generated in %.1fs", n, time.perf_counter() - start)
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
        log.info("index: %d: hnsw %s", n, entry["hnsw"])

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
        log.info("index: %d: ivf %s", n, entry["ivf"])
        entry["load_after"] = load_state()
        results["sizes"][str(n)] = entry
    return results


def _point(found: np.ndarray, truth: np.ndarray, qps: float, flat_qps: float) -> dict[str, float]:
    return {
        "recall_at_10": round(_recall(found, truth), 4),
        "qps": round(qps, 1),
        "speedup_vs_flat": round(qps / flat_qps, 1),
    }


# --------------------------------------------------------------------------- report


def table(report: dict[str, Any]) -> str:
    """The figures as readable text."""
    lines = []
    m = report["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['memory_gib']} GiB")
    s = report["sections"]
    if "encode" in s:
        e = s["encode"]
        c = e["irtune_vs_plain"]
        lines += [
            "",
            f"ENCODE ({e['docs']} docs, batch {e['batch_size']}, {e['max_seq_length']} tokens; "
            f"load before {e['load_before']['loadavg']})",
            f"  plain SentenceTransformer.encode {c['plain_best_docs_per_s']:>8.1f} docs/s",
            f"  irtune encode (torch)            {c['irtune_best_docs_per_s']:>8.1f} docs/s  "
            f"ratio {c['ratio_irtune_over_plain']:.3f}",
            f"  {'backend':<16}{'docs/s':>9}{'x torch':>9}{'NDCG@10':>9}{'delta':>9}"
            f"{'cos min':>9}{'export s':>9}",
        ]
        for key, r in e["backends"].items():
            if "error" in r:
                lines.append(f"  {key:<16} error: {r['error'][:60]}")
                continue
            lines.append(
                f"  {key:<16}{r['docs_per_s']:>9.1f}{r.get('speedup_vs_torch', 0):>9.2f}"
                f"{r['ndcg_at_10']:>9.4f}{r.get('ndcg_delta_vs_torch', 0):>+9.4f}"
                f"{r['cosine_to_torch_min']:>9.4f}{r['load_and_export_s']:>9.1f}"
            )
    if "train" in s:
        t = s["train"]
        lines += [
            "",
            f"TRAIN ({t['pairs']} pairs, MNRL, batch {t['batch_size']}, {t['max_seq_length']} "
            f"tokens; load before {t['load_before']['loadavg']})",
            f"  {'':<12}{'irtune':>10}{'plain':>10}{'ratio':>8}   pairs/s",
            f"  {'end to end':<12}{t['irtune_pairs_per_s_end_to_end']:>10.2f}"
            f"{t['plain_pairs_per_s_end_to_end']:>10.2f}{t['ratio_end_to_end']:>8.3f}",
            f"  {'loop only':<12}{t['irtune_pairs_per_s_loop']:>10.2f}"
            f"{t['plain_pairs_per_s_loop']:>10.2f}{t['ratio_loop']:>8.3f}",
        ]
    if "orchestration" in s:
        o = s["orchestration"]
        lines += [
            "",
            f"ORCHESTRATION (load before {o['load_before']['loadavg']})",
            f"  no-op dvc repro: median {o['noop_repro_median_s']} s {o['noop_repro_s']}, "
            f"stages rerun: {o['noop_repro_reran'] or 'none'}",
        ]
        for key, change in o["changes"].items():
            lines.append(f"  change {key}: reran {change['reran']} ({change['seconds']} s)")
    if "index" in s:
        x = s["index"]
        lines += ["", f"INDEX (dim {x['dim']}, {x['queries']} queries, recall@10 vs flat)"]
        lines.append(f"  {'n':>8} {'index':<22}{'build s':>9}{'QPS':>10}{'x flat':>8}{'recall':>8}")
        for n, entry in x["sizes"].items():
            f = entry["flat"]
            lines.append(f"  {n:>8} {'flat':<22}{f['build_s']:>9.1f}{f['qps']:>10.1f}{1:>8.1f}")
            for kind in ("hnsw", "ivf"):
                label = f"M={entry[kind]['m']}" if kind == "hnsw" else f"nl={entry[kind]['nlist']}"
                for name, p in entry[kind]["search"].items():
                    lines.append(
                        f"  {n:>8} {kind + ' ' + label + ' ' + name.split('=')[1]:<22}"
                        f"{entry[kind]['build_s']:>9.1f}{p['qps']:>10.1f}"
                        f"{p['speedup_vs_flat']:>8.1f}{p['recall_at_10']:>8.4f}"
                    )
            lines.append(f"  {'':>8} load before {entry['load_before']['loadavg']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="BEIR folder (encode, train)")
    parser.add_argument("--model", help="bi-encoder folder or hub id (encode, train)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "bench.json")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="LOAD",
        help="first wait (30 s polls, 15 min at most) for the 1-minute load to fall below LOAD",
    )
    parser.add_argument("--backends", default=",".join(f"{b}-{p}" for b, p in BACKENDS))
    parser.add_argument("--index-sizes", default="", help="e.g. 100000,1000000")
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="interleaved plain/irtune passes of encode and train (default: 2; 1 with --quick)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; expected {SECTIONS}")
    if {"encode", "train"} & set(only) and not (args.data and args.model):
        raise SystemExit("--data and --model are needed by the encode and train sections")
    backends = [tuple(b.rsplit("-", 1)) for b in args.backends.split(",") if b]
    quick = args.quick
    repeats = args.repeats or (1 if quick else 2)
    sizes = [int(x) for x in args.index_sizes.split(",") if x] or (
        [2_000, 10_000] if quick else [100_000, 1_000_000]
    )
    report: dict[str, Any] = {
        "command": shlex.join(
            ["python", "benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "sections": {},
    }
    if args.wait_quiet:
        report["wait_quiet"] = wait_for_quiet(args.wait_quiet, 30, 15 * 60)
    runs = {
        "encode": lambda: bench_encode(
            args.data,
            args.model,
            batch_size=16 if quick else 64,
            max_seq_length=64 if quick else 256,
            max_docs=300 if quick else 0,
            repeats=repeats,
            backends=backends,
        ),
        "train": lambda: bench_train(
            args.data,
            args.model,
            pairs=32 if quick else 512,
            batch_size=8 if quick else 32,
            max_seq_length=64 if quick else 128,
            repeats=repeats,
        ),
        "orchestration": lambda: bench_orchestration(noop_repeats=3),
        "index": lambda: bench_index(
            sizes,
            dim=32 if quick else 384,
            n_queries=200 if quick else 1_000,
            hnsw_m=16,
            ef_searches=[16, 32, 64] if quick else [16, 32, 64, 128],
            nprobes=[1, 4] if quick else [1, 4, 16, 64],
            seed=0,
        ),
    }
    for name in SECTIONS:
        if name in only:
            log.info("=== %s ===", name)
            report["sections"][name] = section(runs[name])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # Written after every section, so a late failure keeps the earlier figures.
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    print(f"\nwritten to {args.out}")
    return report


if __name__ == "__main__":
    main()
