"""Negatives, per-query caps and cross-encoder labels in the prepare step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.config import validate
from irtune.errors import ConfigError
from irtune.prepare import build_rows, known_positives


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    return read_beir(tiny_beir, ["train", "dev", "test"])


@pytest.fixture(scope="module")
def known_texts(dataset: BeirDataset) -> dict[str, set[str]]:
    """Query text -> texts of every doc judged for it in any split."""
    return {
        dataset.queries[q]: {doc_text(dataset.corpus[d]) for d in docs}
        for q, docs in known_positives(dataset).items()
    }


def _cfg(tiny_bi_encoder: Path, **sections) -> object:
    base = {"model": {"base": str(tiny_bi_encoder)}, "train": {"max_seq_length": 64}}
    return validate(base | sections)


def test_cap_per_query(dataset: BeirDataset, tiny_bi_encoder: Path) -> None:
    """max_pairs_per_query=1 keeps exactly one positive of every train query."""
    rows = build_rows(dataset, _cfg(tiny_bi_encoder, prepare={"max_pairs_per_query": 1}))
    per_query = Counter(r["anchor"] for r in rows)
    assert len(per_query) == len(dataset.qrels["train"])
    assert set(per_query.values()) == {1}


@pytest.mark.parametrize("negatives", ["random", "mined"])
def test_mnrl_negatives_are_never_known_positives(
    dataset: BeirDataset, tiny_bi_encoder: Path, known_texts, negatives: str
) -> None:
    """MNRL rows with negatives: n-tuples whose negatives are never judged for the query."""
    cfg = _cfg(
        tiny_bi_encoder,
        prepare={"negatives": negatives, "num_negatives": 2, "mine_relative_margin": 0.0},
    )
    rows = build_rows(dataset, cfg)
    assert rows
    for row in rows:
        assert set(row) == {"anchor", "positive", "negative_1", "negative_2"}
        assert row["positive"] in known_texts[row["anchor"]]
        for key in ("negative_1", "negative_2"):
            assert row[key] not in known_texts[row["anchor"]]


def test_mined_negatives_are_harder_than_random(
    dataset: BeirDataset, tiny_bi_encoder: Path
) -> None:
    """Mined negatives sit closer to their query, for the mining model, than random ones."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_bi_encoder))

    def mean_similarity(negatives: str) -> float:
        cfg = _cfg(tiny_bi_encoder, prepare={"negatives": negatives, "mine_relative_margin": 0.0})
        rows = build_rows(dataset, cfg)
        q = model.encode([r["anchor"] for r in rows], normalize_embeddings=True)
        n = model.encode([r["negative_1"] for r in rows], normalize_embeddings=True)
        return float((q * n).sum(axis=1).mean())

    assert mean_similarity("mined") > mean_similarity("random")


def test_cosent_graded_labels(dataset: BeirDataset, tiny_bi_encoder: Path, known_texts) -> None:
    """Score rows: positives labelled 1 (train grades are all 1), negatives 0, one each."""
    rows = build_rows(
        dataset, _cfg(tiny_bi_encoder, loss={"name": "cosent"}, prepare={"negatives": "random"})
    )
    scores = Counter(r["score"] for r in rows)
    assert scores == {1.0: len(rows) // 2, 0.0: len(rows) // 2}
    for row in rows:
        assert (row["score"] == 1.0) == (row["sentence2"] in known_texts[row["sentence1"]])


def test_cross_encoder_labels(
    dataset: BeirDataset, tiny_bi_encoder: Path, tiny_cross_encoder: Path
) -> None:
    """cross_encoder labels: every pair scored by the cross-encoder, in 0..1, and the base
    model's top-k documents of each query added."""
    cfg = _cfg(
        tiny_bi_encoder,
        loss={"name": "cosent"},
        prepare={"negatives": "random", "labels": "cross_encoder", "label_top_k": 3},
        rerank={"model": str(tiny_cross_encoder), "max_length": 128},
    )
    rows = build_rows(dataset, cfg)
    graded = build_rows(
        dataset, _cfg(tiny_bi_encoder, loss={"name": "cosent"}, prepare={"negatives": "random"})
    )
    assert len(rows) > len(graded)
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert len({r["score"] for r in rows}) > 2  # real scores, not the 0/1 grades


def test_score_loss_without_negatives_is_refused() -> None:
    """CoSENT on positives alone has nothing to learn: the config says so, naming the key."""
    with pytest.raises(ConfigError, match=r"prepare\.negatives"):
        validate({"loss": {"name": "cosent"}, "prepare": {"negatives": "none"}})
