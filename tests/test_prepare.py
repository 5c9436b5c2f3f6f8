"""Training rows from the train qrels: MNRL pairs, seeded subsets, CoSENT scored rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.config import SCORE_FAMILY, Config, validate
from irtune.errors import ConfigError
from irtune.io import read_jsonl, write_jsonl
from irtune.prepare import build_rows, positive_pairs


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    """The tiny dataset with all three splits."""
    return read_beir(tiny_beir, ["train", "dev", "test"])


def _cfg(loss: str = "mnrl", max_pairs: int = 0, seed: int = 42, **prepare: object) -> Config:
    negatives = "random" if loss in SCORE_FAMILY else "none"
    prepare = {"max_pairs": max_pairs, "seed": seed, "negatives": negatives, **prepare}
    return validate({"loss": {"name": loss}, "prepare": prepare})


def _known(dataset: BeirDataset) -> dict[str, set[str]]:
    """query text -> texts of every doc any split judges for it (computed independently)."""
    known: dict[str, set[str]] = {}
    for qrels in dataset.qrels.values():
        for qid, docs in qrels.items():
            known.setdefault(dataset.queries[qid], set()).update(
                doc_text(dataset.corpus[d]) for d in docs
            )
    return known


def _train_pairs(dataset: BeirDataset) -> list[tuple[str, str]]:
    """Every (query text, doc text) with grade > 0 in the train qrels, computed independently."""
    return [
        (dataset.queries[qid], doc_text(dataset.corpus[did]))
        for qid, docs in dataset.qrels["train"].items()
        for did, grade in docs.items()
        if grade > 0
    ]


def _as_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["anchor"], r["positive"]) for r in rows]


def test_mnrl_one_row_per_positive_pair(dataset: BeirDataset) -> None:
    """MNRL rows are exactly the train positive pairs, once each, as anchor/positive."""
    rows = build_rows(dataset, _cfg("mnrl"))
    assert all(set(r) == {"anchor", "positive"} for r in rows)
    assert sorted(_as_pairs(rows)) == sorted(_train_pairs(dataset))


def test_mnrl_ignores_grade_zero(dataset: BeirDataset) -> None:
    """A train judgement with grade 0 yields no row."""
    qrels = {q: dict(d) for q, d in dataset.qrels["train"].items()}
    qid = next(iter(qrels))
    did = next(iter(qrels[qid]))
    qrels[qid][did] = 0
    patched = BeirDataset(dataset.corpus, dataset.queries, {**dataset.qrels, "train": qrels})
    rows = build_rows(patched, _cfg("mnrl"))
    assert len(rows) == len(_train_pairs(dataset)) - 1
    assert (dataset.queries[qid], doc_text(dataset.corpus[did])) not in _as_pairs(rows)


def test_max_pairs_is_a_seeded_subset(dataset: BeirDataset) -> None:
    """max_pairs keeps that many distinct train pairs; same seed same rows, new seed new rows."""
    all_pairs = set(_train_pairs(dataset))
    a = build_rows(dataset, _cfg("mnrl", max_pairs=10, seed=1))
    again = build_rows(dataset, _cfg("mnrl", max_pairs=10, seed=1))
    other = build_rows(dataset, _cfg("mnrl", max_pairs=10, seed=2))
    assert len(a) == 10
    assert len(set(_as_pairs(a))) == 10
    assert set(_as_pairs(a)) <= all_pairs
    assert a == again
    assert set(_as_pairs(other)) <= all_pairs
    assert set(_as_pairs(a)) != set(_as_pairs(other))


def test_max_pairs_above_total_keeps_everything(dataset: BeirDataset) -> None:
    """A max_pairs larger than the pair count keeps every pair."""
    rows = build_rows(dataset, _cfg("mnrl", max_pairs=10_000))
    assert sorted(_as_pairs(rows)) == sorted(_train_pairs(dataset))


@pytest.mark.parametrize("loss", ["cosent", "cosine"])
def test_score_rows(dataset: BeirDataset, loss: str) -> None:
    """Score-family rows: each positive, then one negative at 0 that its query never judged."""
    rows = build_rows(dataset, _cfg(loss))
    pairs = _train_pairs(dataset)
    assert all(set(r) == {"sentence1", "sentence2", "score"} for r in rows)
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert len(rows) == 2 * len(pairs)

    known = _known(dataset)
    positives, negatives = rows[0::2], rows[1::2]
    assert sorted((r["sentence1"], r["sentence2"]) for r in positives) == sorted(pairs)
    assert all(r["score"] > 0 for r in positives)
    for pos, neg in zip(positives, negatives, strict=True):
        assert neg["sentence1"] == pos["sentence1"]  # one negative per positive, same query
        assert neg["score"] == 0.0
        assert neg["sentence2"] not in known[neg["sentence1"]]


def test_score_loss_needs_negatives() -> None:
    """A score loss with prepare.negatives=none is refused: all labels would be equal."""
    with pytest.raises(ConfigError, match=r"prepare\.negatives"):
        validate({"loss": {"name": "cosent"}, "prepare": {"negatives": "none"}})


def test_score_rows_scale_graded_relevance(dataset: BeirDataset) -> None:
    """Positive scores are grade / max grade: a grade-2 pair scores 1.0 and grade 1 scores 0.5."""
    # Use the graded test split as the train split (and dev, ungraded in train, as test).
    cfg = validate(
        {
            "loss": {"name": "cosent"},
            "prepare": {"negatives": "random"},
            "dataset": {"train_split": "test", "dev_split": "", "test_split": "dev"},
        }
    )
    rows = build_rows(dataset, cfg)
    by_pair = {(r["sentence1"], r["sentence2"]): r["score"] for r in rows[0::2]}
    for qid, docs in dataset.qrels["test"].items():
        for did, grade in docs.items():
            expected = grade / max(g for d in dataset.qrels["test"].values() for g in d.values())
            key = (dataset.queries[qid], doc_text(dataset.corpus[did]))
            assert by_pair[key] == pytest.approx(expected)
    assert set(by_pair.values()) == {0.5, 1.0}


def test_rows_round_trip(dataset: BeirDataset, tmp_path: Path) -> None:
    """write_jsonl/read_jsonl give back the rows in order."""
    rows = build_rows(dataset, _cfg("cosent", max_pairs=5))
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert read_jsonl(tmp_path / "rows.jsonl") == rows


def test_positive_pairs_follow_qrels_order(dataset: BeirDataset) -> None:
    """positive_pairs lists (qid, did, grade) in qrels order."""
    expected = [(q, d, g) for q, docs in dataset.qrels["dev"].items() for d, g in docs.items()]
    assert positive_pairs(dataset, "dev") == expected


def test_max_pairs_per_query_caps_each_query(dataset: BeirDataset) -> None:
    """max_pairs_per_query keeps at most that many positives of each query, all real ones."""
    rows = build_rows(dataset, _cfg("mnrl", max_pairs_per_query=2))
    per_query: dict[str, int] = {}
    for anchor, _ in _as_pairs(rows):
        per_query[anchor] = per_query.get(anchor, 0) + 1
    expected = {
        dataset.queries[qid]: min(2, sum(g > 0 for g in docs.values()))
        for qid, docs in dataset.qrels["train"].items()
    }
    assert per_query == expected
    assert set(_as_pairs(rows)) <= set(_train_pairs(dataset))


def test_mnrl_random_negatives(dataset: BeirDataset) -> None:
    """MNRL with random negatives: anchor, positive, negative_1..n; no negative is judged."""
    rows = build_rows(dataset, _cfg("mnrl", negatives="random", num_negatives=2))
    assert len(rows) == len(_train_pairs(dataset))
    known = _known(dataset)
    for row in rows:
        assert set(row) == {"anchor", "positive", "negative_1", "negative_2"}
        assert row["negative_1"] != row["negative_2"]
        assert {row["negative_1"], row["negative_2"]}.isdisjoint(known[row["anchor"]])


def test_mined_negatives_are_hard_and_clean(dataset: BeirDataset, tiny_bi_encoder: Path) -> None:
    """Mined negatives come from the base model's top mine_range_max docs of their query and
    are never a judged doc of it."""
    import numpy as np

    from irtune.models import load_bi_encoder

    window = 10
    cfg = validate(
        {
            "model": {"base": str(tiny_bi_encoder)},
            "train": {"max_seq_length": 64},
            "prepare": {
                "negatives": "mined",
                "num_negatives": 2,
                "mine_range_max": window,
                "mine_relative_margin": 0.0,
            },
        }
    )
    rows = build_rows(dataset, cfg)
    assert rows
    assert all(set(r) == {"anchor", "positive", "negative_1", "negative_2"} for r in rows)

    model = load_bi_encoder(str(tiny_bi_encoder))
    model.max_seq_length = 64
    doc_texts = [doc_text(d) for d in dataset.corpus.values()]
    doc_emb = model.encode(doc_texts, normalize_embeddings=True, convert_to_numpy=True)
    anchors = sorted({r["anchor"] for r in rows})
    q_emb = model.encode(anchors, normalize_embeddings=True, convert_to_numpy=True)
    top = {
        a: {doc_texts[i] for i in np.argsort(-(doc_emb @ q))[: window + 2]}  # +2: float ties
        for a, q in zip(anchors, q_emb, strict=True)
    }
    known = _known(dataset)
    for row in rows:
        negs = {row["negative_1"], row["negative_2"]}
        assert len(negs) == 2
        assert negs.isdisjoint(known[row["anchor"]])
        assert negs <= top[row["anchor"]]


def test_cross_encoder_labels(
    dataset: BeirDataset, tiny_cross_encoder: Path, tiny_bi_encoder: Path
) -> None:
    """labels=cross_encoder scores every positive, negative and base-model top-k pair in 0..1."""
    cfg = validate(
        {
            "loss": {"name": "cosent"},
            "model": {"base": str(tiny_bi_encoder)},
            "rerank": {"model": str(tiny_cross_encoder), "max_length": 128},
            "train": {"max_seq_length": 64},
            "prepare": {
                "negatives": "random",
                "labels": "cross_encoder",
                "label_top_k": 3,
                "max_pairs": 24,
            },
        }
    )
    rows = build_rows(dataset, cfg)
    labels: dict[tuple[str, str], set[float]] = {}
    for r in rows:
        labels.setdefault((r["sentence1"], r["sentence2"]), set()).add(r["score"])
    assert all(len(v) == 1 for v in labels.values())  # one label per (query, doc)
    assert len(labels.keys() & set(_train_pairs(dataset))) >= 24  # the sampled positives
    n_queries = len({r["sentence1"] for r in rows})
    # 24 positives + one negative each, plus at most label_top_k unseen top docs per query
    assert 2 * 24 <= len(rows) <= 2 * 24 + 3 * n_queries
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert len({r["score"] for r in rows}) > 3  # model scores, not graded 0 / 0.5 / 1 labels
