"""Cross-encoder reranking with the tiny cross-encoder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.errors import ConfigError
from irtune.models import load_cross_encoder
from irtune.rerank import rerank
from irtune.runs import Run, cut

MAX_LENGTH = 128  # the tiny model has 128 positions


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    return read_beir(tiny_beir, ["test"])


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder: Path):
    return load_cross_encoder(str(tiny_cross_encoder), MAX_LENGTH)


@pytest.fixture(scope="module")
def first_stage(dataset: BeirDataset) -> Run:
    """A fake retrieval run: 10 distinct-scored docs per test query."""
    doc_ids = list(dataset.corpus)
    return {
        qid: {doc_ids[(q * 7 + i) % len(doc_ids)]: 1.0 - i / 10 for i in range(10)}
        for q, qid in enumerate(dataset.split_queries("test"))
    }


def test_scores_in_unit_interval_and_top_k_kept(
    cross_encoder, dataset: BeirDataset, first_stage: Run
) -> None:
    """Every query keeps exactly its top_k retrieved docs, each rescored into [0, 1]."""
    out = rerank(cross_encoder, first_stage, dataset.queries, dataset.corpus, 3, batch_size=4)
    assert out.keys() == first_stage.keys()
    for qid, docs in first_stage.items():
        best3 = sorted(docs, key=docs.__getitem__, reverse=True)[:3]
        assert set(out[qid]) == set(best3)
        assert all(0.0 <= s <= 1.0 for s in out[qid].values())


def test_scores_come_from_the_cross_encoder(
    cross_encoder, dataset: BeirDataset, first_stage: Run
) -> None:
    """The new scores are sigmoid(raw logit) of the model, applied once; not first-stage scores."""
    import torch

    out = rerank(cross_encoder, first_stage, dataset.queries, dataset.corpus, 2, batch_size=8)
    qid = next(iter(out))
    pairs = [(dataset.queries[qid], doc_text(dataset.corpus[d])) for d in out[qid]]
    logits = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_tensor=True)
    expected = torch.sigmoid(logits.float()).tolist()
    assert list(out[qid].values()) == pytest.approx(expected, abs=1e-5)


def test_long_documents_are_truncated(cross_encoder, dataset: BeirDataset) -> None:
    """A document longer than max_length tokens is truncated, not a crash."""
    did = next(iter(dataset.corpus))
    corpus = {did: {"title": "", "text": "vitamin " * 1000}}
    qid = next(iter(dataset.queries))
    out = rerank(cross_encoder, {qid: {did: 1.0}}, dataset.queries, corpus, 5, batch_size=1)
    assert 0.0 <= out[qid][did] <= 1.0


def test_cut_breaks_ties_by_doc_id() -> None:
    """cut keeps the k best, equal scores in doc id order."""
    run = {"q": {"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.1}}
    assert cut(run, 2) == {"q": {"c": 0.9, "a": 0.5}}
    assert cut(run, 10) == {"q": {"c": 0.9, "a": 0.5, "b": 0.5, "d": 0.1}}


def test_empty_folder_is_a_config_error(tmp_path: Path) -> None:
    """Pointing rerank.model at a folder without a model is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_cross_encoder(str(tmp_path), MAX_LENGTH)
