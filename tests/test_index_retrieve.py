"""Faiss indexes (flat, HNSW, IVF), their files, and dense search with the tiny bi-encoder."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.config import IndexConfig
from irtune.dense import dense_search, exact_search
from irtune.encode import encode_corpus, read_embeddings, write_embeddings
from irtune.errors import DataError
from irtune.index import INDEX, build_index, flat_index, read_index, write_index
from irtune.models import load_bi_encoder

N, DIM = 500, 16


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """500 random unit vectors in 16 dimensions."""
    return _unit(N, DIM, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    """50 random unit query vectors."""
    return _unit(50, DIM, seed=1)


def test_flat_finds_stored_vectors_exactly(vectors: np.ndarray) -> None:
    """Searching a flat index with stored vectors returns each one first, at cosine 1."""
    index = build_index(vectors, IndexConfig(type="flat"))
    scores, rows = index.search(vectors[:25], 3)
    assert rows[:, 0].tolist() == list(range(25))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_flat_matches_brute_force(vectors: np.ndarray, queries: np.ndarray) -> None:
    """The flat index's top 10 equals a numpy inner-product ranking."""
    index = build_index(vectors, IndexConfig(type="flat"))
    _, rows = index.search(queries, 10)
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert (rows == brute).all()


def test_flat_index_of_chunks_is_one_flat_index(vectors: np.ndarray, queries: np.ndarray) -> None:
    """Vectors added chunk by chunk search exactly as the same vectors added at once."""
    whole = build_index(vectors, IndexConfig(type="flat"))
    chunked = flat_index(np.array_split(vectors, 7))
    assert chunked.ntotal == N
    for got, want in zip(chunked.search(queries, 10), whole.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_recall(vectors: np.ndarray, queries: np.ndarray, kind: str) -> None:
    """HNSW and IVF (default settings) find >= 90% of the exact top 10 on small data."""
    _, exact = build_index(vectors, IndexConfig(type="flat")).search(queries, 10)
    index = build_index(vectors, IndexConfig(type=kind))
    assert index.ntotal == N
    _, approx = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9


def test_ivf_on_tiny_data_clamps_cells() -> None:
    """IVF over fewer vectors than its cells need still trains (one cell) and searches."""
    x = _unit(50, DIM, seed=2)
    index = build_index(x, IndexConfig(type="ivf", ivf_nlist=64, ivf_nprobe=8))
    assert index.nlist == 1
    assert index.nprobe == 1
    _, rows = index.search(x[:5], 1)
    assert rows[:, 0].tolist() == list(range(5))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_write_read_round_trip(
    vectors: np.ndarray, queries: np.ndarray, tmp_path: Path, kind: str
) -> None:
    """An index and its doc ids written to a folder read back and search identically."""
    doc_ids = [f"doc-{i}" for i in range(N)]
    index = build_index(vectors, IndexConfig(type=kind))
    write_index(index, doc_ids, tmp_path / "index")
    back, back_ids = read_index(tmp_path / "index")
    assert back_ids == doc_ids
    assert back.ntotal == N and back.d == DIM
    s1, r1 = index.search(queries, 5)
    s2, r2 = back.search(queries, 5)
    assert (r1 == r2).all()
    np.testing.assert_allclose(s1, s2)


@pytest.mark.parametrize("keep", [0.5, 0.02, 0.0])
def test_truncated_index_raises_data_error(
    vectors: np.ndarray, tmp_path: Path, keep: float
) -> None:
    """A truncated index file is a DataError naming the file, not a Faiss RuntimeError."""
    write_index(build_index(vectors, IndexConfig()), [str(i) for i in range(N)], tmp_path / "ix")
    path = tmp_path / "ix" / INDEX
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_index(tmp_path / "ix")


def test_index_and_sidecar_must_agree(vectors: np.ndarray, tmp_path: Path) -> None:
    """An index whose doc-id sidecar has a different length is rejected."""
    write_index(
        build_index(vectors, IndexConfig()), [str(i) for i in range(N - 1)], tmp_path / "ix"
    )
    with pytest.raises(DataError, match="ids"):
        read_index(tmp_path / "ix")


def test_missing_index_raises_data_error(tmp_path: Path) -> None:
    """A folder without index.faiss is a DataError naming the file."""
    (tmp_path / "ix").mkdir()
    with pytest.raises(DataError, match=re.escape(INDEX)):
        read_index(tmp_path / "ix")


# --- dense search with the tiny bi-encoder -------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    return read_beir(tiny_beir, ["test"])


@pytest.fixture(scope="module")
def model(tiny_bi_encoder: Path):
    """The tiny 32-dim bi-encoder."""
    return load_bi_encoder(str(tiny_bi_encoder))


@pytest.fixture(scope="module")
def corpus_index(model, dataset: BeirDataset) -> tuple[object, list[str], np.ndarray]:
    """A flat index of the tiny corpus, its doc ids and the embeddings."""
    emb = encode_corpus(model, dataset.corpus, batch_size=16)
    return build_index(emb, IndexConfig(type="flat")), list(dataset.corpus), emb


def test_corpus_embeddings_are_normalised(corpus_index, dataset: BeirDataset) -> None:
    """encode_corpus gives one float32 unit vector per document."""
    _, _, emb = corpus_index
    assert emb.shape == (len(dataset.corpus), 32)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_small_corpus_is_encoded_in_one_call(model, corpus_index, dataset: BeirDataset) -> None:
    """Below the chunk size, encode_corpus is exactly one encode of every text: the bytes of
    the embeddings are those of a plain call."""
    _, _, emb = corpus_index
    texts = [doc_text(doc) for doc in dataset.corpus.values()]
    plain = model.encode_document(
        texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True
    )
    assert emb.tobytes() == plain.astype(np.float32).tobytes()


def test_chunked_encoding_equals_one_shot(model, corpus_index, dataset: BeirDataset) -> None:
    """Encoded 7 documents at a time, the corpus gets the same rows in the same order (up to
    float rounding: batches are padded differently)."""
    _, _, emb = corpus_index
    chunked = encode_corpus(model, dataset.corpus, batch_size=16, chunk=7)
    assert chunked.shape == emb.shape and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, emb, atol=1e-6)


def test_exact_search_is_dense_search_over_a_flat_index(
    model, corpus_index, dataset: BeirDataset
) -> None:
    """The one-off exact search (baseline, mining) equals dense search over the stored index."""
    index, doc_ids, _ = corpus_index
    queries = dataset.split_queries("test")
    expected = dense_search(model, index, doc_ids, queries, top_k=5, batch_size=4)
    assert exact_search(model, dataset.corpus, queries, 5, 16, 4) == expected


def test_embeddings_round_trip(corpus_index, tmp_path: Path) -> None:
    """write_embeddings/read_embeddings keep the matrix and its row order."""
    _, doc_ids, emb = corpus_index
    write_embeddings(emb, doc_ids, tmp_path / "emb")
    back, back_ids = read_embeddings(tmp_path / "emb")
    assert back_ids == doc_ids
    np.testing.assert_array_equal(back, emb)


def test_dense_search_matches_brute_force(model, corpus_index, dataset: BeirDataset) -> None:
    """dense_search returns, per test query, the top_k docs of a numpy cosine ranking."""
    index, doc_ids, emb = corpus_index
    queries = dataset.split_queries("test")
    run = dense_search(model, index, doc_ids, queries, top_k=5, batch_size=4)
    assert run.keys() == queries.keys()
    q_emb = model.encode(list(queries.values()), normalize_embeddings=True, convert_to_numpy=True)
    for qid, q in zip(queries, q_emb, strict=True):
        sims = emb @ q
        best = np.argsort(-sims)[:5]
        assert set(run[qid]) == {doc_ids[i] for i in best}
        for i in best:
            assert run[qid][doc_ids[i]] == pytest.approx(float(sims[i]), abs=1e-4)


def test_top_k_larger_than_corpus_is_clamped(
    model, corpus_index, dataset: BeirDataset, caplog: pytest.LogCaptureFixture
) -> None:
    """top_k above the corpus size retrieves every doc once per query and logs a warning."""
    index, doc_ids, _ = corpus_index
    queries = dataset.split_queries("test")
    with caplog.at_level(logging.WARNING, logger="irtune"):
        run = dense_search(model, index, doc_ids, queries, top_k=1000, batch_size=8)
    assert all(set(docs) == set(doc_ids) for docs in run.values())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1000" in warnings[0].getMessage()
    assert str(len(doc_ids)) in warnings[0].getMessage()


def test_model_dimension_mismatch_raises(model, dataset: BeirDataset) -> None:
    """A 32-dim query model against an index of dimension 8 is a DataError naming both."""
    index = build_index(_unit(20, 8, seed=3), IndexConfig(type="flat"))
    with pytest.raises(DataError, match=r"32.*8"):
        dense_search(
            model,
            index,
            [f"d{i}" for i in range(20)],
            dataset.split_queries("test"),
            top_k=5,
            batch_size=8,
        )
